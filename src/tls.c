/* tls: the front end's OpenSSL context, the upstream TLS files check, the handshake report.
 *
 * The server context serves `listen ... tls` (client.c drives each connection's SSL on the
 * raw socket); libcurl does the upstream's TLS, from the same files checked here. Failed
 * front-end handshakes (scanners, plain HTTP on the TLS port) write no access-log line:
 * they are counted, and reported on stderr at most once per TLS_DIAG_INTERVAL_S.
 */
#include "mcpeek/tls.h"

#include <openssl/err.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "mcpeek/diag.h"

/* At most one handshake-failure diagnostic per this many seconds. */
#define TLS_DIAG_INTERVAL_S 10

static atomic_ulong handshake_failures;
static atomic_llong last_diag_s;

/* Modern AEAD suites only for TLS 1.2; TLS 1.3 suites are OpenSSL's defaults. */
static const char TLS12_CIPHERS[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

static void openssl_errors(struct strbuf *errors, const char *what, const char *path)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    strbuf_printf(errors, "%s %s: %s\n", what, path, e ? buf : "unknown error");
    ERR_clear_error();
}

static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char http11[] = "\x08http/1.1";
    if (SSL_select_next_proto((unsigned char **)out, outlen, http11, sizeof(http11) - 1, in,
                              inlen) == OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_ALERT_FATAL; /* we speak HTTP/1.1 only (RFC 7301) */
}

SSL_CTX *tls_server_ctx_new(const struct mcpeek_config *cfg, struct strbuf *errors)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        openssl_errors(errors, "tls", "context");
        return NULL;
    }
    int min = (cfg->tls_min_version && strcmp(cfg->tls_min_version, "TLSv1.3") == 0)
                  ? TLS1_3_VERSION
                  : TLS1_2_VERSION;
    SSL_CTX_set_min_proto_version(ctx, min);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    /* client.c retries a blocked SSL_write from its output buffer, which may have grown (and
     * moved) since: OpenSSL must accept the new address. Partial writes let the output move
     * on record by record, so a slow reader's send deadline sees progress. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    if (!SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS)) {
        openssl_errors(errors, "tls", "cipher list");
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        openssl_errors(errors, "tls_cert", cfg->tls_cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1) {
        openssl_errors(errors, "tls_key", cfg->tls_key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        openssl_errors(errors, "tls_key does not match tls_cert", cfg->tls_key);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int tls_client_files_check(const struct mcpeek_config *cfg, struct strbuf *errors)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        openssl_errors(errors, "upstream tls", "context");
        return -1;
    }
    if (cfg->upstream_tls_verify) {
        /* upstream_ca_file replaces the system store: a private CA is trusted alone. */
        int ok = cfg->upstream_ca_file
                     ? SSL_CTX_load_verify_locations(ctx, cfg->upstream_ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            openssl_errors(errors, "upstream_ca_file",
                           cfg->upstream_ca_file ? cfg->upstream_ca_file : "(system store)");
            goto fail;
        }
    }
    if (cfg->upstream_tls_cert) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cfg->upstream_tls_cert) != 1) {
            openssl_errors(errors, "upstream_tls_cert", cfg->upstream_tls_cert);
            goto fail;
        }
        const char *key = cfg->upstream_tls_key ? cfg->upstream_tls_key : cfg->upstream_tls_cert;
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            openssl_errors(errors, "upstream_tls_key", key);
            goto fail;
        }
    }
    SSL_CTX_free(ctx);
    return 0;
fail:
    SSL_CTX_free(ctx);
    return -1;
}

void tls_note_handshake_failure(void)
{
    unsigned long n = atomic_fetch_add(&handshake_failures, 1) + 1;
    long long now = (long long)time(NULL);
    long long last = atomic_load(&last_diag_s);
    if (now - last >= TLS_DIAG_INTERVAL_S &&
        atomic_compare_exchange_strong(&last_diag_s, &last, now))
        diag_log("warn", "tls: handshake not completed (%lu since start; next report in %d s)", n,
                 TLS_DIAG_INTERVAL_S);
    ERR_clear_error();
}
