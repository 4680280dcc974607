/*
 * tls.c - OpenSSL contexts and the self-signed certificate.
 *
 * The self-signed certificate is written to a temporary name and renamed,
 * so a crash never leaves a half-written key that a later start would trust.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include "tls.h"

static void
tls_errstr(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char tmp[200] = "";

	if (e)
		ERR_error_string_n(e, tmp, sizeof(tmp));
	snprintf(err, errlen, "%s%s%s", what, e ? ": " : "", tmp);
	ERR_clear_error();
}

static int
write_pem(const char *path, int mode, int (*wr)(FILE *, void *), void *obj)
{
	char tmp[4096];
	FILE *fp;
	int fd, ok;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return -1;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd == -1)
		return -1;
	if ((fp = fdopen(fd, "w")) == NULL) {
		close(fd);
		return -1;
	}
	ok = wr(fp, obj);
	if (fflush(fp) != 0 || fsync(fileno(fp)) != 0)
		ok = 0;
	if (fclose(fp) != 0)
		ok = 0;
	if (!ok || rename(tmp, path) == -1) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

static int
wr_key(FILE *fp, void *k)
{
	return PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL, NULL);
}

static int
wr_cert(FILE *fp, void *x)
{
	return PEM_write_X509(fp, x);
}

int
tls_ensure_selfsigned(const char *dir, const char *hostname, char *err,
                      size_t errlen)
{
	char cert[4096], key[4096], san[600];
	EVP_PKEY *pk = NULL;
	X509 *x = NULL;
	X509_NAME *name;
	X509_EXTENSION *ext = NULL;
	X509V3_CTX v3;
	int rc = -1;

	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	if (access(cert, R_OK) == 0 && access(key, R_OK) == 0)
		return 0;
	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	if ((pk = EVP_RSA_gen(2048)) == NULL) {
		tls_errstr(err, errlen, "key generation");
		goto fail;
	}
	if ((x = X509_new()) == NULL)
		goto ossl_fail;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)time(NULL));
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 24 * 3600);
	X509_set_pubkey(x, pk);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)hostname, -1, -1, 0);
	X509_set_issuer_name(x, name);
	snprintf(san, sizeof(san), "DNS:%s", hostname);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
	if (ext == NULL || !X509_add_ext(x, ext, -1))
		goto ossl_fail;
	if (!X509_sign(x, pk, EVP_sha256()))
		goto ossl_fail;
	if (write_pem(key, 0600, wr_key, pk) == -1 ||
	    write_pem(cert, 0644, wr_cert, x) == -1) {
		snprintf(err, errlen, "writing %s: %s", dir, strerror(errno));
		goto fail;
	}
	rc = 0;
	goto fail;
ossl_fail:
	tls_errstr(err, errlen, "certificate generation");
fail:
	X509_EXTENSION_free(ext);
	X509_free(x);
	EVP_PKEY_free(pk);
	return rc;
}

SSL_CTX *
tls_server_ctx(const char *cert, const char *key, char *err, size_t errlen)
{
	static const unsigned char sid_ctx[] = "petrel";
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (ctx == NULL) {
		tls_errstr(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		tls_errstr(err, errlen, cert);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		tls_errstr(err, errlen, key);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		tls_errstr(err, errlen, "certificate and key do not match");
		goto fail;
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* ---- client ----------------------------------------------------------- */

#define TLS_CACHE_MAX 256

struct tls_cache_entry {
	char *key;
	SSL_SESSION *sess;
	unsigned long used;
};

static struct tls_cache_entry cache[TLS_CACHE_MAX];
static unsigned long cache_clock;

SSL_SESSION *
tls_cache_get(const char *key)
{
	for (size_t i = 0; i < TLS_CACHE_MAX; i++)
		if (cache[i].key && strcmp(cache[i].key, key) == 0) {
			if (!SSL_SESSION_is_resumable(cache[i].sess))
				return NULL;
			cache[i].used = ++cache_clock;
			return cache[i].sess;
		}
	return NULL;
}

void
tls_cache_put(const char *key, SSL_SESSION *sess)
{
	size_t victim = 0;

	if (key == NULL || sess == NULL)
		return;
	for (size_t i = 0; i < TLS_CACHE_MAX; i++) {
		if (cache[i].key && strcmp(cache[i].key, key) == 0) {
			victim = i;
			break;
		}
		if (cache[i].key == NULL) {
			victim = i;
			break;
		}
		if (cache[i].used < cache[victim].used)
			victim = i;
	}
	if (cache[victim].key == NULL || strcmp(cache[victim].key, key) != 0) {
		free(cache[victim].key);
		if ((cache[victim].key = strdup(key)) == NULL) {
			SSL_SESSION_free(cache[victim].sess);
			cache[victim].sess = NULL;
			return;
		}
	}
	SSL_SESSION_up_ref(sess);
	SSL_SESSION_free(cache[victim].sess);
	cache[victim].sess = sess;
	cache[victim].used = ++cache_clock;
}

void
tls_cache_clear(void)
{
	for (size_t i = 0; i < TLS_CACHE_MAX; i++) {
		free(cache[i].key);
		SSL_SESSION_free(cache[i].sess);
		cache[i].key = NULL;
		cache[i].sess = NULL;
	}
}

static int
tls_new_session(SSL *ssl, SSL_SESSION *sess)
{
	const char *key = SSL_get_app_data(ssl);

	if (key)
		tls_cache_put(key, sess);
	return 0; /* we took our own reference */
}

SSL_CTX *
tls_client_ctx(int verify, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL) {
		tls_errstr(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
	    SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, tls_new_session);
	if (verify) {
		if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
			tls_errstr(err, errlen, "system certificate store");
			SSL_CTX_free(ctx);
			return NULL;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	return ctx;
}

int
tls_client_verify_host(SSL *ssl, const char *host)
{
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	return SSL_set1_host(ssl, host) == 1 ? 0 : -1;
}
