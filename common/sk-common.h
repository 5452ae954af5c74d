/* streamkeeper: small helpers shared by every module. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define SK_ERROR (sk_error_quark ())
GQuark sk_error_quark (void);

/* Errors that cross module boundaries; the HTTP layer maps them to status codes. */
typedef enum {
  SK_ERROR_INVALID,      /* 400: malformed or semantically wrong input */
  SK_ERROR_UNAUTHORIZED, /* 401: missing or wrong credentials */
  SK_ERROR_NOT_FOUND,    /* 404 */
  SK_ERROR_CONFLICT,     /* 409: e.g. stream key already live with on_duplicate_key=reject */
  SK_ERROR_TOO_LARGE,    /* 413 */
  SK_ERROR_UNSUPPORTED,  /* 415/422: a codec or feature we refuse */
  SK_ERROR_LIMIT,        /* 503: a configured capacity limit was reached */
  SK_ERROR_UNAVAILABLE,  /* 503: draining, fenced, store down */
  SK_ERROR_STALE_EPOCH,  /* a write fenced off because the writer lost ownership */
  SK_ERROR_INTERNAL,     /* 500 */
  SK_ERROR_MEDIA_TYPE,   /* 415: wrong Content-Type (e.g. not application/sdp for WHIP/WHEP) */
} SkError;

/* Wall-clock milliseconds since the Unix epoch (event at_ms, started_at_ms). */
gint64 sk_now_ms (void);

/* A debug line stamped with sk_now_ms (the clock of the events' at_ms), for latency
 * timelines: run with G_MESSAGES_DEBUG=all and grep "timing". */
#define SK_TIMING(fmt, ...)                                                                        \
  g_debug ("timing %" G_GINT64_FORMAT " " fmt, sk_now_ms (), ##__VA_ARGS__)

/* Fills @buf with cryptographically secure random bytes (getrandom). */
void sk_random_bytes (guint8 *buf, gsize len);

/* A new id: @prefix followed by 16 base62 characters (~95 random bits), e.g. "IN_…", "PA_…". */
char *sk_id_new (const char *prefix);

/* A new secret of @n_bits random bits (rounded up), base62-encoded: stream keys, tokens. */
char *sk_secret_new (guint n_bits);

/* Compares two NUL-terminated secrets in time independent of where they differ. */
gboolean sk_secure_equal (const char *a, const char *b);

/* Lower-case hex SHA-256 of @s; used to index secrets without comparing them in a hash table. */
char *sk_sha256_hex (const char *s);

G_END_DECLS
