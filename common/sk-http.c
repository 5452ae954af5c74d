/* streamkeeper: small libsoup helpers shared by the HTTP front ends. */
#include "common/sk-http.h"

#include <string.h>

#include "common/sk-common.h"

/* json-glib parses recursively: cap the nesting of a request body before handing it over, so a
 * body of 64 KiB of '[' cannot exhaust the stack. */
#define SK_HTTP_MAX_JSON_DEPTH 32

void
sk_http_reply_json (SoupServerMessage *msg, guint status, JsonNode *node)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  gsize len = 0;

  json_generator_set_root (gen, node);
  char *body = json_generator_to_data (gen, &len);

  soup_server_message_set_status (msg, status, NULL);
  soup_server_message_set_response (msg, "application/json", SOUP_MEMORY_TAKE, body, len);
  soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Cache-Control",
                                "no-store");
}

static void
reply_error_literal (SoupServerMessage *msg, guint status, const char *code, const char *message)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "error");
  json_builder_add_string_value (b, message);
  json_builder_set_member_name (b, "code");
  json_builder_add_string_value (b, code);
  json_builder_end_object (b);

  g_autoptr (JsonNode) root = json_builder_get_root (b);
  SoupMessageHeaders *headers = soup_server_message_get_response_headers (msg);

  if (status == SOUP_STATUS_UNAUTHORIZED)
    soup_message_headers_replace (headers, "WWW-Authenticate", "Bearer");
  else if (status == SOUP_STATUS_SERVICE_UNAVAILABLE)
    soup_message_headers_replace (headers, "Retry-After", "2");
  sk_http_reply_json (msg, status, root);
}

void
sk_http_reply_error (SoupServerMessage *msg, guint status, const char *code, const char *format,
                     ...)
{
  va_list args;

  va_start (args, format);
  g_autofree char *message = g_strdup_vprintf (format, args);
  va_end (args);
  reply_error_literal (msg, status, code, message);
}

void
sk_http_reply_gerror (SoupServerMessage *msg, const GError *error)
{
  guint status = SOUP_STATUS_INTERNAL_SERVER_ERROR;
  const char *code = "internal";

  if (error->domain == SK_ERROR) {
    switch ((SkError)error->code) {
      case SK_ERROR_INVALID:
        status = SOUP_STATUS_BAD_REQUEST;
        code = "invalid";
        break;
      case SK_ERROR_UNAUTHORIZED:
        status = SOUP_STATUS_UNAUTHORIZED;
        code = "unauthorized";
        break;
      case SK_ERROR_NOT_FOUND:
        status = SOUP_STATUS_NOT_FOUND;
        code = "not_found";
        break;
      case SK_ERROR_CONFLICT:
        status = SOUP_STATUS_CONFLICT;
        code = "conflict";
        break;
      case SK_ERROR_TOO_LARGE:
        status = SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE;
        code = "too_large";
        break;
      case SK_ERROR_UNSUPPORTED:
        /* A well-formed request we refuse (codec, feature). */
        status = SOUP_STATUS_UNPROCESSABLE_ENTITY;
        code = "unsupported";
        break;
      case SK_ERROR_LIMIT:
        status = SOUP_STATUS_SERVICE_UNAVAILABLE;
        code = "limit";
        break;
      case SK_ERROR_UNAVAILABLE:
        status = SOUP_STATUS_SERVICE_UNAVAILABLE;
        code = "unavailable";
        break;
      case SK_ERROR_STALE_EPOCH:
        /* This node lost the room: the client should retry, likely elsewhere. */
        status = SOUP_STATUS_SERVICE_UNAVAILABLE;
        code = "stale_epoch";
        break;
      case SK_ERROR_MEDIA_TYPE:
        status = SOUP_STATUS_UNSUPPORTED_MEDIA_TYPE;
        code = "unsupported_media_type";
        break;
      case SK_ERROR_INTERNAL:
      default:
        break;
    }
  }
  reply_error_literal (msg, status, code, error->message);
}

void
sk_http_add_cors (SoupServerMessage *msg, const char *allow_methods)
{
  SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);

  soup_message_headers_replace (h, "Access-Control-Allow-Origin", "*");
  soup_message_headers_replace (h, "Access-Control-Allow-Methods", allow_methods);
  soup_message_headers_replace (h, "Access-Control-Allow-Headers",
                                "Authorization, Content-Type, If-Match");
  soup_message_headers_replace (h, "Access-Control-Expose-Headers",
                                "Location, ETag, Link, Accept-Patch");
  soup_message_headers_replace (h, "Access-Control-Max-Age", "86400");
}

const char *
sk_http_get_bearer (SoupServerMessage *msg)
{
  const char *auth = soup_message_headers_get_one (soup_server_message_get_request_headers (msg),
                                                   "Authorization");

  if (auth == NULL || g_ascii_strncasecmp (auth, "Bearer", 6) != 0)
    return NULL;
  auth += 6;
  if (*auth != ' ' && *auth != '\t')
    return NULL;
  while (*auth == ' ' || *auth == '\t')
    auth++;
  return *auth ? auth : NULL;
}

gboolean
sk_http_require_token (SoupServerMessage *msg, const char *token)
{
  const char *bearer = sk_http_get_bearer (msg);

  if (bearer == NULL) {
    reply_error_literal (msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized",
                         "missing Authorization: Bearer <api token>");
    return FALSE;
  }
  /* An unset token never matches: the API is closed, not open, when misconfigured. */
  if (token == NULL || *token == '\0' || !sk_secure_equal (bearer, token)) {
    reply_error_literal (msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", "invalid token");
    return FALSE;
  }
  return TRUE;
}

static void
on_got_headers (SoupServerMessage *msg, gpointer user_data)
{
  gsize max = GPOINTER_TO_SIZE (user_data);
  SoupMessageHeaders *h = soup_server_message_get_request_headers (msg);
  SoupEncoding encoding = soup_message_headers_get_encoding (h);

  /* A status set here makes libsoup answer at once without reading the body or running the
   * handler. */
  if (encoding == SOUP_ENCODING_CONTENT_LENGTH
      && soup_message_headers_get_content_length (h) > (goffset)max) {
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Connection",
                                  "close");
    reply_error_literal (msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, "too_large",
                         "request body too large");
  } else if (encoding == SOUP_ENCODING_CHUNKED || encoding == SOUP_ENCODING_EOF) {
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Connection",
                                  "close");
    reply_error_literal (msg, SOUP_STATUS_LENGTH_REQUIRED, "length_required",
                         "request bodies need a Content-Length");
  }
}

static void
on_request_started (SoupServer *server, SoupServerMessage *msg, gpointer user_data)
{
  g_signal_connect (msg, "got-headers", G_CALLBACK (on_got_headers), user_data);
}

void
sk_http_limit_request_bodies (SoupServer *server, gsize max_bytes)
{
  g_signal_connect (server, "request-started", G_CALLBACK (on_request_started),
                    GSIZE_TO_POINTER (max_bytes));
}

/* Max nesting of arrays/objects in @data, or G_MAXUINT as soon as it exceeds @limit. */
static guint
json_depth (const char *data, gsize len, guint limit)
{
  guint depth = 0, max = 0;
  gboolean in_string = FALSE, escaped = FALSE;

  for (gsize i = 0; i < len; i++) {
    char c = data[i];

    if (in_string) {
      if (escaped)
        escaped = FALSE;
      else if (c == '\\')
        escaped = TRUE;
      else if (c == '"')
        in_string = FALSE;
      continue;
    }
    if (c == '"') {
      in_string = TRUE;
    } else if (c == '[' || c == '{') {
      if (++depth > limit)
        return G_MAXUINT;
      max = MAX (max, depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      depth--;
    }
  }
  return max;
}

JsonObject *
sk_http_read_json_object (SoupServerMessage *msg, gsize max_bytes, GError **error)
{
  SoupMessageBody *body = soup_server_message_get_request_body (msg);
  const char *content_type
      = soup_message_headers_get_content_type (soup_server_message_get_request_headers (msg), NULL);

  if (body->length > (goffset)max_bytes) {
    g_set_error (error, SK_ERROR, SK_ERROR_TOO_LARGE,
                 "request body of %" G_GOFFSET_FORMAT " bytes exceeds the limit of %" G_GSIZE_FORMAT
                 " bytes",
                 body->length, max_bytes);
    return NULL;
  }
  /* curl -d sends form encoding by default: accept it, but refuse other explicit types. */
  if (content_type && g_ascii_strcasecmp (content_type, "application/json") != 0
      && !g_str_has_suffix (content_type, "+json")
      && g_ascii_strcasecmp (content_type, "application/x-www-form-urlencoded") != 0
      && g_ascii_strcasecmp (content_type, "text/plain") != 0) {
    g_set_error (error, SK_ERROR, SK_ERROR_MEDIA_TYPE,
                 "unsupported Content-Type \"%s\" (expected application/json)", content_type);
    return NULL;
  }

  g_autoptr (GBytes) bytes = soup_message_body_flatten (body);
  gsize len = 0;
  const char *data = g_bytes_get_data (bytes, &len);

  if (len == 0) {
    g_set_error_literal (error, SK_ERROR, SK_ERROR_INVALID,
                         "request body is empty (expected a JSON object)");
    return NULL;
  }
  if (json_depth (data, len, SK_HTTP_MAX_JSON_DEPTH) == G_MAXUINT) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "JSON nested deeper than %d levels",
                 SK_HTTP_MAX_JSON_DEPTH);
    return NULL;
  }

  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  g_autoptr (GError) local = NULL;

  if (!json_parser_load_from_data (parser, data, (gssize)len, &local)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "malformed JSON: %s", local->message);
    return NULL;
  }

  JsonNode *root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root)) {
    g_set_error_literal (error, SK_ERROR, SK_ERROR_INVALID, "request body must be a JSON object");
    return NULL;
  }
  return json_object_ref (json_node_get_object (root));
}

gboolean
sk_http_content_type_is (SoupServerMessage *msg, const char *expected)
{
  const char *ct
      = soup_message_headers_get_content_type (soup_server_message_get_request_headers (msg), NULL);

  return ct != NULL && g_ascii_strcasecmp (ct, expected) == 0;
}

GBytes *
sk_http_read_trickle_patch (SoupServerMessage *msg, const char *etag, gsize max_bytes,
                            SkHttpReplyErrorFunc reply_error, gboolean *if_match_any)
{
  SoupMessageBody *body = soup_server_message_get_request_body (msg);
  const char *if_match
      = soup_message_headers_get_one (soup_server_message_get_request_headers (msg), "If-Match");

  if (!sk_http_content_type_is (msg, "application/trickle-ice-sdpfrag")) {
    reply_error (msg, SOUP_STATUS_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                 "PATCH takes application/trickle-ice-sdpfrag");
    return NULL;
  }
  if (if_match == NULL) {
    reply_error (msg, 428, "precondition_required", "If-Match with the session's ETag is required");
    return NULL;
  }
  *if_match_any = strcmp (if_match, "*") == 0;
  if (!*if_match_any && g_strcmp0 (if_match, etag) != 0) {
    reply_error (msg, SOUP_STATUS_PRECONDITION_FAILED, "etag_mismatch",
                 "If-Match does not match this session's ETag");
    return NULL;
  }
  if (body->length < 0 || (guint64)body->length > max_bytes) {
    reply_error (msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, "too_large",
                 "the fragment exceeds %" G_GSIZE_FORMAT " bytes", max_bytes);
    return NULL;
  }
  return soup_message_body_flatten (body);
}
