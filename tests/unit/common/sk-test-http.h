/* Test helpers: a SoupServer on 127.0.0.1 and a blocking-looking client that spins the main
 * loop (server and client share the thread). Header-only, for the unit tests. */
#pragma once

#include <libsoup/soup.h>
#include <json-glib/json-glib.h>

typedef struct {
  guint status;
  char *body;
  SoupMessageHeaders *headers;
  JsonNode *json; /* parsed body, or NULL */
} SkTestReply;

static inline void
sk_test_reply_free (SkTestReply *r)
{
  g_free (r->body);
  soup_message_headers_unref (r->headers);
  if (r->json)
    json_node_unref (r->json);
  g_free (r);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkTestReply, sk_test_reply_free)

/* Listens on 127.0.0.1 on a free port; returns the base URL ("http://127.0.0.1:N"). */
static inline char *
sk_test_server_listen (SoupServer *server)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) addr = g_inet_socket_address_new (lo, 0);

  g_assert_true (soup_server_listen (server, addr, 0, &error));
  g_assert_no_error (error);
  GSList *uris = soup_server_get_uris (server);
  g_assert_nonnull (uris);
  char *base = g_strdup_printf ("http://127.0.0.1:%d", g_uri_get_port (uris->data));
  g_slist_free_full (uris, (GDestroyNotify)g_uri_unref);
  return base;
}

/* A client that never consults a proxy: tests talk to 127.0.0.1 only. */
static inline SoupSession *
sk_test_session_new (void)
{
  return soup_session_new_with_options ("proxy-resolver", NULL, "timeout", 10, NULL);
}

typedef struct {
  GBytes *bytes;
  GError *error;
  gboolean done;
} SkTestPending;

static inline void
sk_test_request_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  SkTestPending *p = user_data;
  p->bytes = soup_session_send_and_read_finish (SOUP_SESSION (source), res, &p->error);
  p->done = TRUE;
}

/* One request; @token and @body may be NULL. */
static inline SkTestReply *
sk_test_request (SoupSession *session, const char *method, const char *url, const char *token,
                 const char *content_type, const char *body)
{
  g_autoptr (SoupMessage) msg = soup_message_new (method, url);
  SkTestPending p = { 0 };

  g_assert_nonnull (msg);
  if (token) {
    g_autofree char *auth = g_strdup_printf ("Bearer %s", token);
    soup_message_headers_replace (soup_message_get_request_headers (msg), "Authorization", auth);
  }
  if (body) {
    g_autoptr (GBytes) b = g_bytes_new (body, strlen (body));
    soup_message_set_request_body_from_bytes (msg, content_type ? content_type : "application/json",
                                              b);
  }
  soup_session_send_and_read_async (session, msg, G_PRIORITY_DEFAULT, NULL, sk_test_request_done,
                                    &p);
  while (!p.done)
    g_main_context_iteration (NULL, TRUE);
  g_assert_no_error (p.error);

  SkTestReply *r = g_new0 (SkTestReply, 1);
  gsize len = 0;
  const char *data = g_bytes_get_data (p.bytes, &len);
  r->status = soup_message_get_status (msg);
  r->body = g_strndup (data ? data : "", len);
  r->headers = soup_message_headers_ref (soup_message_get_response_headers (msg));
  g_bytes_unref (p.bytes);

  g_autoptr (JsonParser) parser = json_parser_new ();
  if (len > 0 && json_parser_load_from_data (parser, r->body, -1, NULL))
    r->json = json_node_copy (json_parser_get_root (parser));
  return r;
}

static inline JsonObject *
sk_test_reply_object (SkTestReply *r)
{
  g_assert_nonnull (r->json);
  g_assert_true (JSON_NODE_HOLDS_OBJECT (r->json));
  return json_node_get_object (r->json);
}

/* Asserts the JSON error shape {"error": "...", "code": code}. */
static inline void
sk_test_assert_error (SkTestReply *r, guint status, const char *code)
{
  if (r->status != status)
    g_error ("expected status %u, got %u: %s", status, r->status, r->body);
  g_assert_cmpstr (soup_message_headers_get_content_type (r->headers, NULL), ==,
                   "application/json");
  JsonObject *o = sk_test_reply_object (r);
  g_assert_cmpstr (json_object_get_string_member_with_default (o, "code", NULL), ==, code);
  const char *message = json_object_get_string_member_with_default (o, "error", NULL);
  g_assert_nonnull (message);
  g_assert_cmpuint (strlen (message), >, 0);
}
