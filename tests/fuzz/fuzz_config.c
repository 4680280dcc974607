/*
 * fuzz_config.c - libFuzzer target for config_load_string(): the input
 * bytes, copied and NUL-terminated, are loaded as a configuration; a
 * loaded config is printed (config_print to /dev/null walks every field)
 * and freed. Crashes, leaks and sanitizer reports are the findings.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static FILE *devnull;
	struct config *cfg = NULL;
	char err[512];
	char *text;

	if (devnull == NULL)
		devnull = fopen("/dev/null", "w");
	text = malloc(size + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (config_load_string(text, "fuzz", &cfg, err, sizeof(err)) == 0) {
		if (devnull != NULL)
			config_print(cfg, devnull);
		config_free(cfg);
	}
	free(text);
	return 0;
}
