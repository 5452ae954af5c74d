/* Unit tests: HTTP helpers over a real SoupServer and SoupSession on 127.0.0.1. */
#include <string.h>

#include "common/sk-common.h"
#include "common/sk-http.h"
#include "sk-test-http.h"

#define TOKEN "test-token-0123456789"

/* /error/<code>: replies the SkError <code> through sk_http_reply_gerror.
 * /json: requires the token, parses a JSON object of ≤ 256 bytes and echoes it. */
static void
handler (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
         gpointer user_data)
{
  if (g_str_has_prefix (path, "/error/")) {
    g_autoptr (GError) e = g_error_new (SK_ERROR, atoi (path + 7), "boom %s", path + 7);
    sk_http_reply_gerror (msg, e);
    return;
  }
  if (strcmp (path, "/foreign") == 0) {
    g_autoptr (GError) e = g_error_new_literal (G_IO_ERROR, G_IO_ERROR_FAILED, "io");
    sk_http_reply_gerror (msg, e);
    return;
  }
  if (!sk_http_require_token (msg, TOKEN))
    return;

  g_autoptr (GError) error = NULL;
  g_autoptr (JsonObject) o = sk_http_read_json_object (msg, 256, &error);
  if (o == NULL) {
    sk_http_reply_gerror (msg, error);
    return;
  }
  g_autoptr (JsonNode) node = json_node_init_object (json_node_alloc (), o);
  sk_http_reply_json (msg, 200, node);
}

typedef struct {
  SoupServer *server;
  SoupSession *session;
  char *base;
} Fixture;

static void
setup (Fixture *f, gconstpointer data)
{
  f->server = soup_server_new (NULL, NULL);
  sk_http_limit_request_bodies (f->server, 4096);
  soup_server_add_handler (f->server, NULL, handler, NULL, NULL);
  f->base = sk_test_server_listen (f->server);
  f->session = sk_test_session_new ();
}

static void
teardown (Fixture *f, gconstpointer data)
{
  g_object_unref (f->session);
  soup_server_disconnect (f->server);
  g_object_unref (f->server);
  g_free (f->base);
}

static SkTestReply *
req (Fixture *f, const char *method, const char *path, const char *token, const char *ctype,
     const char *body)
{
  g_autofree char *url = g_strconcat (f->base, path, NULL);
  return sk_test_request (f->session, method, url, token, ctype, body);
}

static void
test_error_mapping (Fixture *f, gconstpointer data)
{
  struct {
    SkError code;
    guint status;
    const char *name;
  } cases[] = {
    { SK_ERROR_INVALID, 400, "invalid" },
    { SK_ERROR_UNAUTHORIZED, 401, "unauthorized" },
    { SK_ERROR_NOT_FOUND, 404, "not_found" },
    { SK_ERROR_CONFLICT, 409, "conflict" },
    { SK_ERROR_TOO_LARGE, 413, "too_large" },
    { SK_ERROR_UNSUPPORTED, 422, "unsupported" },
    { SK_ERROR_MEDIA_TYPE, 415, "unsupported_media_type" },
    { SK_ERROR_LIMIT, 503, "limit" },
    { SK_ERROR_UNAVAILABLE, 503, "unavailable" },
    { SK_ERROR_INTERNAL, 500, "internal" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *path = g_strdup_printf ("/error/%d", cases[i].code);
    g_autoptr (SkTestReply) r = req (f, "GET", path, NULL, NULL, NULL);

    sk_test_assert_error (r, cases[i].status, cases[i].name);
    const char *www = soup_message_headers_get_one (r->headers, "WWW-Authenticate");
    const char *retry = soup_message_headers_get_one (r->headers, "Retry-After");
    g_assert_true ((www != NULL) == (cases[i].status == 401));
    g_assert_true ((retry != NULL) == (cases[i].status == 503));
  }

  g_autoptr (SkTestReply) r = req (f, "GET", "/foreign", NULL, NULL, NULL);
  sk_test_assert_error (r, 500, "internal");
}

static void
test_token (Fixture *f, gconstpointer data)
{
  g_autoptr (SkTestReply) none = req (f, "POST", "/json", NULL, NULL, "{}");
  sk_test_assert_error (none, 401, "unauthorized");
  g_assert_cmpstr (soup_message_headers_get_one (none->headers, "WWW-Authenticate"), ==, "Bearer");

  g_autoptr (SkTestReply) wrong = req (f, "POST", "/json", TOKEN "x", NULL, "{}");
  sk_test_assert_error (wrong, 401, "unauthorized");

  g_autoptr (SkTestReply) prefix = req (f, "POST", "/json", "test-token", NULL, "{}");
  sk_test_assert_error (prefix, 401, "unauthorized");

  g_autoptr (SkTestReply) ok = req (f, "POST", "/json", TOKEN, NULL, "{\"a\":1}");
  g_assert_cmpuint (ok->status, ==, 200);
  g_assert_cmpint (json_object_get_int_member (sk_test_reply_object (ok), "a"), ==, 1);
}

static void
test_json_body (Fixture *f, gconstpointer data)
{
  struct {
    const char *ctype, *body;
    guint status;
    const char *code, *needle;
  } cases[] = {
    { NULL, "{\"a\":", 400, "invalid", "malformed JSON" },
    { NULL, "[1,2]", 400, "invalid", "JSON object" },
    { NULL, "\"s\"", 400, "invalid", "JSON object" },
    { NULL, "", 400, "invalid", "empty" },
    { NULL, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", 400,
      "invalid", "nested" },
    { NULL, "[]", 413, "too_large", "limit" }, /* body replaced below */
    { "application/sdp", "{}", 415, "unsupported_media_type", "Content-Type" },
  };

  g_autofree char *big = g_strdup_printf ("{\"pad\":\"%0300d\"}", 0);
  cases[5].body = big;

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (SkTestReply) r = req (f, "POST", "/json", TOKEN, cases[i].ctype, cases[i].body);
    sk_test_assert_error (r, cases[i].status, cases[i].code);
    const char *msg = json_object_get_string_member (sk_test_reply_object (r), "error");
    if (strstr (msg, cases[i].needle) == NULL)
      g_error ("case %zu: “%s” does not mention “%s”", i, msg, cases[i].needle);
  }

  /* Brackets inside strings do not count as nesting. */
  g_autoptr (SkTestReply) r = req (f, "POST", "/json", TOKEN, "application/json",
                                   "{\"s\":\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\"\"}");
  g_assert_cmpuint (r->status, ==, 200);
}

/* Bodies over the server-wide limit are refused from their headers: the handler (which would
 * answer 401 without a token) never runs. */
static void
test_body_limit (Fixture *f, gconstpointer data)
{
  g_autofree char *big = g_strnfill (5000, 'x');
  g_autoptr (SkTestReply) r = req (f, "POST", "/json", NULL, NULL, big);
  sk_test_assert_error (r, 413, "too_large");

  /* Under the limit the handler runs (and refuses the missing token). */
  g_autofree char *fits = g_strnfill (4000, 'x');
  g_autoptr (SkTestReply) ok = req (f, "POST", "/json", NULL, NULL, fits);
  sk_test_assert_error (ok, 401, "unauthorized");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/http/error-mapping", Fixture, NULL, setup, test_error_mapping, teardown);
  g_test_add ("/http/token", Fixture, NULL, setup, test_token, teardown);
  g_test_add ("/http/json-body", Fixture, NULL, setup, test_json_body, teardown);
  g_test_add ("/http/body-limit", Fixture, NULL, setup, test_body_limit, teardown);
  return g_test_run ();
}
