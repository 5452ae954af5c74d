/* Unit tests: the ingress API over a real SoupServer and SoupSession on 127.0.0.1. */
#include <string.h>

#include "common/sk-common.h"
#include "ingress/sk-ingress.h"
#include "../common/sk-test-http.h"

#define TOKEN "test-api-token-0123456789"

typedef struct {
  SkConfig *config;
  SkStore *store;
  SkIngressRegistry *registry;
  SoupServer *server;
  SoupSession *session;
  char *base;
} Fixture;

static void
setup (Fixture *f, gconstpointer data)
{
  f->config = sk_config_new ();
  f->config->api_token = g_strdup (TOKEN);
  f->config->public_host = g_strdup ("127.0.0.1");
  f->config->node_id = g_strdup ("n1");
  f->store = sk_store_memory_new ();
  f->registry = sk_ingress_registry_new (f->config, f->store, NULL, NULL);
  f->server = soup_server_new (NULL, NULL);
  sk_ingress_registry_attach_http (f->registry, f->server);
  f->base = sk_test_server_listen (f->server);
  f->session = sk_test_session_new ();
}

static void
teardown (Fixture *f, gconstpointer data)
{
  g_object_unref (f->session);
  soup_server_disconnect (f->server);
  g_object_unref (f->server);
  sk_ingress_registry_free (f->registry);
  /* Let the store's pending completions run before it goes. */
  while (g_main_context_iteration (NULL, FALSE))
    ;
  sk_store_free (f->store);
  sk_config_free (f->config);
  g_free (f->base);
}

static SkTestReply *
req (Fixture *f, const char *method, const char *path, const char *token, const char *body)
{
  g_autofree char *url = g_strconcat (f->base, path, NULL);
  return sk_test_request (f->session, method, url, token, NULL, body);
}

static const char *
str (JsonObject *o, const char *name)
{
  return json_object_get_string_member_with_default (o, name, NULL);
}

/* Creates an ingress and returns its record (a new reference). */
static JsonObject *
create (Fixture *f, const char *body)
{
  g_autoptr (SkTestReply) r = req (f, "POST", "/v1/ingress", TOKEN, body);
  if (r->status != 201)
    g_error ("create: %u %s", r->status, r->body);
  return json_object_ref (sk_test_reply_object (r));
}

static void
test_auth (Fixture *f, gconstpointer data)
{
  const char *cases[][2] = { { "GET", "/v1/ingress" },
                             { "POST", "/v1/ingress" },
                             { "GET", "/v1/ingress/IN_x" },
                             { "DELETE", "/v1/ingress/IN_x" } };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (SkTestReply) none = req (f, cases[i][0], cases[i][1], NULL, NULL);
    sk_test_assert_error (none, 401, "unauthorized");
    g_assert_cmpstr (soup_message_headers_get_one (none->headers, "WWW-Authenticate"), ==,
                     "Bearer");
    g_autoptr (SkTestReply) wrong = req (f, cases[i][0], cases[i][1], "nope", NULL);
    sk_test_assert_error (wrong, 401, "unauthorized");
  }
  /* Nothing was created by the refused POST. */
  g_assert_cmpuint (sk_ingress_registry_get_n_sessions (f->registry), ==, 0);
  g_autoptr (SkTestReply) list = req (f, "GET", "/v1/ingress", TOKEN, NULL);
  g_assert_cmpuint (list->status, ==, 200);
  JsonArray *items = json_object_get_array_member (sk_test_reply_object (list), "items");
  g_assert_cmpuint (json_array_get_length (items), ==, 0);
}

static void
test_create (Fixture *f, gconstpointer data)
{
  g_autoptr (SkTestReply) r
      = req (f, "POST", "/v1/ingress", TOKEN,
             "{\"input_type\":\"rtmp\",\"name\":\"Cam 1\",\"room_name\":\"demo\",\"future\":[1]}");
  g_assert_cmpuint (r->status, ==, 201);
  JsonObject *o = sk_test_reply_object (r);
  const char *id = str (o, "ingress_id");
  g_assert_true (g_str_has_prefix (id, "IN_"));
  g_autofree char *location = g_strconcat ("/v1/ingress/", id, NULL);
  g_assert_cmpstr (soup_message_headers_get_one (r->headers, "Location"), ==, location);

  const char *key = str (o, "stream_key");
  g_assert_cmpuint (strlen (key), >=, 22); /* ≥ 128 bits of base62 */
  for (const char *p = key; *p; p++)
    g_assert_true (g_ascii_isalnum (*p));
  g_assert_cmpstr (str (o, "url"), ==, "rtmp://127.0.0.1:1935/live");
  g_assert_cmpstr (str (o, "input_type"), ==, "rtmp");
  g_assert_cmpstr (str (o, "room_name"), ==, "demo");
  g_assert_cmpstr (str (o, "participant_identity"), ==, "Cam 1");
  g_assert_cmpstr (str (o, "participant_name"), ==, "Cam 1");
  g_assert_cmpstr (str (o, "transcode"), ==, "auto");
  g_assert_false (json_object_has_member (o, "future"));
  JsonObject *state = json_object_get_object_member (o, "state");
  g_assert_cmpstr (str (state, "status"), ==, "ENDPOINT_INACTIVE");
  g_assert_true (json_object_has_member (json_object_get_object_member (state, "input"), "video"));

  /* No name: the identity is the ingress id (stable across reconnects), not random. */
  g_autoptr (JsonObject) w = create (f, "{\"input_type\":\"whip\",\"room_name\":\"demo\","
                                        "\"transcode\":\"never\",\"participant_name\":\"W\"}");
  g_assert_cmpstr (str (w, "url"), ==, "http://127.0.0.1:8080/whip");
  g_assert_cmpstr (str (w, "participant_identity"), ==, str (w, "ingress_id"));
  g_assert_cmpstr (str (w, "participant_name"), ==, "W");
  g_assert_cmpstr (str (w, "transcode"), ==, "never");
  g_assert_cmpstr (str (w, "stream_key"), !=, key);
}

static void
test_validation (Fixture *f, gconstpointer data)
{
  g_autofree char *long_room = g_strnfill (129, 'r');
  g_autofree char *long_room_body
      = g_strdup_printf ("{\"input_type\":\"rtmp\",\"room_name\":\"%s\"}", long_room);
  struct {
    const char *body, *needle;
  } cases[] = {
    { "{\"input_type\":", "malformed JSON" },
    { "[]", "JSON object" },
    { "{\"room_name\":\"demo\"}", "input_type" },
    { "{\"input_type\":\"srt\",\"room_name\":\"demo\"}", "input_type" },
    { "{\"input_type\":7,\"room_name\":\"demo\"}", "input_type" },
    { "{\"input_type\":\"rtmp\"}", "room_name" },
    { "{\"input_type\":\"rtmp\",\"room_name\":\"\"}", "room_name" },
    { "{\"input_type\":\"rtmp\",\"room_name\":\"a b\"}", "room_name" },
    { "{\"input_type\":\"rtmp\",\"room_name\":\"caf\\u00e9\"}", "room_name" },
    { "{\"input_type\":\"rtmp\",\"room_name\":\"a/b\"}", "room_name" },
    { long_room_body, "room_name" },
    { "{\"input_type\":\"rtmp\",\"room_name\":\"demo\",\"name\":{}}", "name" },
    { "{\"input_type\":\"rtmp\",\"room_name\":\"demo\",\"participant_identity\":\"\"}",
      "participant_identity" },
    { "{\"input_type\":\"rtmp\",\"room_name\":\"demo\",\"participant_identity\":\"a\\nb\"}",
      "control" },
    { "{\"input_type\":\"rtmp\",\"room_name\":\"demo\",\"transcode\":\"sometimes\"}", "transcode" },
    { "{\"input_type\":\"rtmp\",\"room_name\":\"demo\",\"enabled\":\"yes\"}", "enabled" },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (SkTestReply) r = req (f, "POST", "/v1/ingress", TOKEN, cases[i].body);
    sk_test_assert_error (r, 400, "invalid");
    const char *msg = str (sk_test_reply_object (r), "error");
    if (strstr (msg, cases[i].needle) == NULL)
      g_error ("case %zu: “%s” does not mention “%s”", i, msg, cases[i].needle);
  }

  /* The body limit is 64 KiB. */
  g_autofree char *pad = g_strnfill (70 * 1024, 'x');
  g_autofree char *big
      = g_strdup_printf ("{\"input_type\":\"rtmp\",\"room_name\":\"demo\",\"x\":\"%s\"}", pad);
  g_autoptr (SkTestReply) r = req (f, "POST", "/v1/ingress", TOKEN, big);
  sk_test_assert_error (r, 413, "too_large");

  /* Nothing was created by any of these. */
  g_autoptr (SkTestReply) list = req (f, "GET", "/v1/ingress", TOKEN, NULL);
  JsonArray *items = json_object_get_array_member (sk_test_reply_object (list), "items");
  g_assert_cmpuint (json_array_get_length (items), ==, 0);
}

static void
test_list_get (Fixture *f, gconstpointer data)
{
  g_autoptr (JsonObject) a = create (f, "{\"input_type\":\"rtmp\",\"room_name\":\"r1\"}");
  g_autoptr (JsonObject) b = create (f, "{\"input_type\":\"rtmp\",\"room_name\":\"r2\"}");
  g_autoptr (JsonObject) c = create (f, "{\"input_type\":\"whip\",\"room_name\":\"r1\"}");

  g_autoptr (SkTestReply) all = req (f, "GET", "/v1/ingress", TOKEN, NULL);
  g_assert_cmpuint (all->status, ==, 200);
  JsonArray *items = json_object_get_array_member (sk_test_reply_object (all), "items");
  g_assert_cmpuint (json_array_get_length (items), ==, 3);

  g_autoptr (SkTestReply) r1 = req (f, "GET", "/v1/ingress?room=r1", TOKEN, NULL);
  items = json_object_get_array_member (sk_test_reply_object (r1), "items");
  g_assert_cmpuint (json_array_get_length (items), ==, 2);
  for (guint i = 0; i < 2; i++)
    g_assert_cmpstr (str (json_array_get_object_element (items, i), "room_name"), ==, "r1");

  g_autoptr (SkTestReply) none = req (f, "GET", "/v1/ingress?room=zzz", TOKEN, NULL);
  items = json_object_get_array_member (sk_test_reply_object (none), "items");
  g_assert_cmpuint (json_array_get_length (items), ==, 0);

  g_autofree char *path = g_strconcat ("/v1/ingress/", str (b, "ingress_id"), NULL);
  g_autoptr (SkTestReply) one = req (f, "GET", path, TOKEN, NULL);
  g_assert_cmpuint (one->status, ==, 200);
  g_assert_cmpstr (str (sk_test_reply_object (one), "stream_key"), ==, str (b, "stream_key"));

  g_autoptr (SkTestReply) missing = req (f, "GET", "/v1/ingress/IN_doesnotexist00", TOKEN, NULL);
  sk_test_assert_error (missing, 404, "not_found");
  g_autofree char *deeper = g_strconcat (path, "/more", NULL);
  g_autoptr (SkTestReply) deep = req (f, "GET", deeper, TOKEN, NULL);
  sk_test_assert_error (deep, 404, "not_found");

  g_autoptr (SkTestReply) put = req (f, "PUT", path, TOKEN, "{}");
  sk_test_assert_error (put, 405, "method_not_allowed");
  g_assert_nonnull (soup_message_headers_get_one (put->headers, "Allow"));
}

static void
test_patch (Fixture *f, gconstpointer data)
{
  g_autoptr (JsonObject) a
      = create (f, "{\"input_type\":\"rtmp\",\"room_name\":\"r1\",\"name\":\"n\"}");
  g_autofree char *path = g_strconcat ("/v1/ingress/", str (a, "ingress_id"), NULL);

  g_autoptr (SkTestReply) ok = req (
      f, "PATCH", path, TOKEN,
      "{\"room_name\":\"r2\",\"participant_identity\":\"obs-1\",\"participant_name\":\"Cam\","
      "\"transcode\":\"always\",\"name\":\"renamed\"}");
  g_assert_cmpuint (ok->status, ==, 200);

  g_autoptr (SkTestReply) got = req (f, "GET", path, TOKEN, NULL);
  JsonObject *o = sk_test_reply_object (got);
  g_assert_cmpstr (str (o, "room_name"), ==, "r2");
  g_assert_cmpstr (str (o, "participant_identity"), ==, "obs-1");
  g_assert_cmpstr (str (o, "participant_name"), ==, "Cam");
  g_assert_cmpstr (str (o, "transcode"), ==, "always");
  g_assert_cmpstr (str (o, "name"), ==, "renamed");
  g_assert_cmpstr (str (o, "stream_key"), ==, str (a, "stream_key"));

  /* Immutable fields: repeating them is fine, changing them is not. */
  g_autofree char *same
      = g_strdup_printf ("{\"stream_key\":\"%s\",\"name\":\"again\"}", str (a, "stream_key"));
  g_autoptr (SkTestReply) same_r = req (f, "PATCH", path, TOKEN, same);
  g_assert_cmpuint (same_r->status, ==, 200);
  const char *bad[] = { "{\"stream_key\":\"other\"}", "{\"ingress_id\":\"IN_other\"}",
                        "{\"input_type\":\"whip\"}",
                        /* One bad field: nothing of the request is applied. */
                        "{\"name\":\"partial\",\"room_name\":\"bad room\"}" };
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_autoptr (SkTestReply) r = req (f, "PATCH", path, TOKEN, bad[i]);
    sk_test_assert_error (r, 400, "invalid");
  }
  g_autoptr (SkTestReply) after = req (f, "GET", path, TOKEN, NULL);
  o = sk_test_reply_object (after);
  g_assert_cmpstr (str (o, "name"), ==, "again");
  g_assert_cmpstr (str (o, "room_name"), ==, "r2");
  g_assert_cmpstr (str (o, "stream_key"), ==, str (a, "stream_key"));

  g_autoptr (SkTestReply) missing = req (f, "PATCH", "/v1/ingress/IN_nope", TOKEN, "{}");
  sk_test_assert_error (missing, 404, "not_found");
}

typedef struct {
  SkStore *store;
  char *value;
  GError *error;
  gboolean done;
} StoreGet;

static void
store_get_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  StoreGet *g = user_data;
  g->value = sk_store_get_finish (g->store, res, &g->error);
  g->done = TRUE;
}

/* The store's copy of an ingress record, or NULL. */
static char *
store_get (Fixture *f, const char *id)
{
  StoreGet g = { f->store };

  sk_store_get_async (f->store, "ingress", id, NULL, store_get_done, &g);
  while (!g.done)
    g_main_context_iteration (NULL, TRUE);
  g_clear_error (&g.error);
  return g.value;
}

static void
test_store_write_through (Fixture *f, gconstpointer data)
{
  g_autoptr (JsonObject) a = create (f, "{\"input_type\":\"rtmp\",\"room_name\":\"r1\"}");
  const char *id = str (a, "ingress_id");
  g_autofree char *path = g_strconcat ("/v1/ingress/", id, NULL);

  /* Let the write complete, then read it back. */
  while (g_main_context_iteration (NULL, FALSE))
    ;
  g_autofree char *stored = store_get (f, id);
  g_assert_nonnull (stored);
  g_assert_nonnull (strstr (stored, str (a, "stream_key")));

  g_autoptr (SkTestReply) patch = req (f, "PATCH", path, TOKEN, "{\"room_name\":\"moved\"}");
  g_assert_cmpuint (patch->status, ==, 200);
  while (g_main_context_iteration (NULL, FALSE))
    ;
  g_autofree char *patched = store_get (f, id);
  g_assert_nonnull (strstr (patched, "\"room_name\":\"moved\""));

  g_autoptr (SkTestReply) del = req (f, "DELETE", path, TOKEN, NULL);
  g_assert_cmpuint (del->status, ==, 204);
  while (g_main_context_iteration (NULL, FALSE))
    ;
  g_autofree char *gone = store_get (f, id);
  g_assert_null (gone);
}

static void
test_delete (Fixture *f, gconstpointer data)
{
  g_autoptr (JsonObject) a = create (f, "{\"input_type\":\"rtmp\",\"room_name\":\"r1\"}");
  const char *id = str (a, "ingress_id");
  g_autofree char *path = g_strconcat ("/v1/ingress/", id, NULL);

  g_autoptr (SkTestReply) del = req (f, "DELETE", path, TOKEN, NULL);
  g_assert_cmpuint (del->status, ==, 204);
  g_autoptr (SkTestReply) get = req (f, "GET", path, TOKEN, NULL);
  sk_test_assert_error (get, 404, "not_found");
  g_autoptr (SkTestReply) again = req (f, "DELETE", path, TOKEN, NULL);
  sk_test_assert_error (again, 404, "not_found");

  /* The key no longer authenticates. */
  g_autoptr (GError) error = NULL;
  g_assert_null (sk_ingress_registry_start_session (
      f->registry, SK_INPUT_RTMP, str (a, "stream_key"), "test", NULL, NULL, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_NOT_FOUND);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add ("/ingress-api/auth", Fixture, NULL, setup, test_auth, teardown);
  g_test_add ("/ingress-api/create", Fixture, NULL, setup, test_create, teardown);
  g_test_add ("/ingress-api/validation", Fixture, NULL, setup, test_validation, teardown);
  g_test_add ("/ingress-api/list-get", Fixture, NULL, setup, test_list_get, teardown);
  g_test_add ("/ingress-api/patch", Fixture, NULL, setup, test_patch, teardown);
  g_test_add ("/ingress-api/delete", Fixture, NULL, setup, test_delete, teardown);
  g_test_add ("/ingress-api/store-write-through", Fixture, NULL, setup, test_store_write_through,
              teardown);
  return g_test_run ();
}
