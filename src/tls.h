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

/*
 * Client context for STARTTLS towards other servers. verify = 0: encrypt
 * without checking the certificate (policies "may" and "encrypt"); 1: PKIX
 * against the system store (policy "verify"; the host name is set per
 * connection with tls_client_verify_host). TLS 1.2+, session tickets on; new
 * sessions (TLS 1.3 tickets arrive after the handshake) go to the session
 * cache under the key stored as the SSL's app data (see io_starttls_client).
 */
SSL_CTX *tls_client_ctx(int verify, char *err, size_t errlen);

/* Ask OpenSSL to check the peer certificate against host (SAN/CN). */
int tls_client_verify_host(SSL *ssl, const char *host);

/*
 * Client session cache, keyed "host:port:policy". get returns a borrowed
 * session (or NULL) valid until the next put for that key or
 * tls_cache_clear; put takes a reference of its own. Bounded LRU.
 */
SSL_SESSION *tls_cache_get(const char *key);
void tls_cache_put(const char *key, SSL_SESSION *sess);
void tls_cache_clear(void);

#endif
