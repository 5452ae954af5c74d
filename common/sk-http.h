/* streamkeeper: small libsoup helpers shared by the HTTP front ends. */
#pragma once

#include <libsoup/soup.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* Replies {"error": message, "code": code} with @status. */
void sk_http_reply_error (SoupServerMessage *msg, guint status, const char *code,
                          const char *format, ...) G_GNUC_PRINTF (4, 5);

/* Maps an SK_ERROR (or any GError) to a status + code and replies with it. */
void sk_http_reply_gerror (SoupServerMessage *msg, const GError *error);

/* Replies with a JSON body (takes no ownership of @node). */
void sk_http_reply_json (SoupServerMessage *msg, guint status, JsonNode *node);

/* Adds the CORS headers the browser-facing endpoints share. */
void sk_http_add_cors (SoupServerMessage *msg, const char *allow_methods);

/* Returns the Bearer token of the request, or NULL. */
const char *sk_http_get_bearer (SoupServerMessage *msg);

/* TRUE if the request carries `Authorization: Bearer <token>` (constant-time compare);
 * otherwise replies 401 and returns FALSE. */
gboolean sk_http_require_token (SoupServerMessage *msg, const char *token);

/* Refuses, before reading them, request bodies over @max_bytes (413) and bodies of unknown
 * length (411: chunked uploads), so no handler ever sees a body libsoup buffered unbounded. */
void sk_http_limit_request_bodies (SoupServer *server, gsize max_bytes);

/* How a front end replies with an error: sk_http_reply_error, or the WHIP server's RFC 9457
 * problem bodies. */
typedef void (*SkHttpReplyErrorFunc) (SoupServerMessage *msg, guint status, const char *code,
                                      const char *format, ...) G_GNUC_PRINTF (4, 5);

/* TRUE if the request's Content-Type is @expected (parameters ignored). */
gboolean sk_http_content_type_is (SoupServerMessage *msg, const char *expected);

/* The checks a trickle PATCH on a WHIP or WHEP session starts with (RFC 9725 4.3, RFC 8840):
 * an application/trickle-ice-sdpfrag body (415) of at most @max_bytes (413), If-Match present
 * (428) and either @etag or "*" (412; *@if_match_any tells which). Returns the body, or NULL
 * once @reply_error has set the answer. */
GBytes *sk_http_read_trickle_patch (SoupServerMessage *msg, const char *etag, gsize max_bytes,
                                    SkHttpReplyErrorFunc reply_error, gboolean *if_match_any);

/* Parses the request body as a JSON object of at most @max_bytes. */
JsonObject *sk_http_read_json_object (SoupServerMessage *msg, gsize max_bytes, GError **error);

G_END_DECLS
