/*
 * tls.h - OpenSSL context setup. The server context serves STARTTLS on the
 * listeners; when a listener names no certificate, a self-signed one is
 * generated on first start and kept in <spool>/tls/ for later starts.
 */
#ifndef PETREL_TLS_H
#define PETREL_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

/*
 * Make sure <dir>/cert.pem and <dir>/key.pem exist: create a self-signed
 * RSA-2048 certificate for hostname (CN and subjectAltName, ten years) if
 * either is missing. The key file is written mode 0600. Returns 0 or -1
 * with a reason in err.
 */
int tls_ensure_selfsigned(const char *dir, const char *hostname, char *err,
                          size_t errlen);

/* Server context: TLS 1.2+, no renegotiation, session tickets on. */
SSL_CTX *tls_server_ctx(const char *cert, const char *key, char *err,
                        size_t errlen);

#endif
