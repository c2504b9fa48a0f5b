/* tls: the OpenSSL context of the front end (HTTPS listeners), and a check of the
 * upstream side's TLS files (libcurl does the upstream TLS itself).
 *
 * The SSL_CTX belongs to a configuration generation, so SIGHUP loads the certificate and
 * key anew: new handshakes use the new context, established connections keep theirs (each
 * SSL holds its own reference). A broken certificate fails the reload like any bad config.
 */
#ifndef MCPEEK_TLS_H
#define MCPEEK_TLS_H

#include <openssl/ssl.h>

#include "mcpeek/config.h"
#include "mcpeek/strbuf.h"

/* Builds the server context from tls_cert, tls_key and tls_min_version (TLS 1.2 or 1.3
 * minimum, ALPN http/1.1, session tickets on). NULL after appending the reason to errors. */
SSL_CTX *tls_server_ctx_new(const struct mcpeek_config *cfg, struct strbuf *errors);

/* Loads the upstream TLS files once (upstream_ca_file, else the system store when verifying;
 * upstream_tls_cert and its key, which must match), as libcurl will for each connection:
 * 0, or -1 after appending the reason to `errors`. */
int tls_client_files_check(const struct mcpeek_config *cfg, struct strbuf *errors);

/* A TLS connection closed before its handshake completed: counted, and reported on
 * stderr at most once per interval. */
void tls_note_handshake_failure(void);

#endif
