"""Output helpers shared by bench/compare.py and bench/inbound_bench.py:
Markdown tables and gnuplot line plots."""
import os
import shutil
import subprocess
import sys
import tempfile


def fmt(v):
    return "–" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def ratio(a, b):
    """a / b with two decimals; "–" when either is missing or zero."""
    if a in (None, 0) or b in (None, 0):
        return "–"
    return f"{a / b:.2f}"


def md_table(cols, rows):
    """cols: [(key, header)], rows: dicts -> Markdown table lines."""
    out = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(k)) for k, _ in cols) + " |")
    return out


def plot_lines(png, title, xlabel, ylabel, series, settings="", size="800,500"):
    """series: [(legend, gnuplot style, [(x, y), ...])]; one line each.
    Returns png, or None without gnuplot or data."""
    gp = shutil.which("gnuplot")
    if not gp:
        print("gnuplot not installed: no plot", file=sys.stderr)
        return None
    series = [s for s in series if s[2]]
    if not series:
        return None
    work = tempfile.mkdtemp(prefix="petrel-plot-")
    try:
        plots = []
        for i, (legend, style, points) in enumerate(series):
            dat = os.path.join(work, f"{i}.dat")
            with open(dat, "w") as f:
                f.writelines(f"{x} {y}\n" for x, y in sorted(points))
            plots.append(f"'{dat}' using 1:2 with linespoints {style} title '{legend}'")
        script = (f"set terminal pngcairo size {size} font ',10'\nset output '{png}'\n"
                  f"set title '{title}'\nset xlabel '{xlabel}'\nset ylabel '{ylabel}'\n"
                  f"set grid\n{settings}\nplot " + ", ".join(plots) + "\n")
        subprocess.run([gp], input=script.encode(), check=True, timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return png
