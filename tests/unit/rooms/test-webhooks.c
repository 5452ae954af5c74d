/* Unit tests of webhook delivery to real SoupServer receivers on 127.0.0.1: signatures,
 * retries after errors, order, a hanging receiver, the queue bound, and room events. */
#include "rooms-test-util.h"

#include <gst/gst.h>

#include "rooms/sk-rooms.h"
#include "rooms/sk-webhooks.h"
#include "tests/unit/common/sk-test-http.h"

#define SECRET "s3cret"

typedef struct {
  char *body;
  char *signature;
  char *authorization;
  guint status; /* what we answered; 0 while hanging */
} Request;

static void
request_free (Request *r)
{
  g_free (r->body);
  g_free (r->signature);
  g_free (r->authorization);
  g_free (r);
}

typedef struct {
  SoupServer *server;
  char *url;
  GPtrArray *requests; /* Request*, every attempt */
  guint fail_next;     /* answer 500 to this many requests */
  gboolean hang;       /* leave requests unanswered */
  GPtrArray *hung;     /* SoupServerMessage* */
} Receiver;

static void
receiver_handler (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                  gpointer user_data)
{
  Receiver *rx = user_data;
  SoupMessageBody *body = soup_server_message_get_request_body (msg);
  SoupMessageHeaders *headers = soup_server_message_get_request_headers (msg);
  Request *r = g_new0 (Request, 1);

  g_assert_cmpstr (soup_server_message_get_method (msg), ==, "POST");
  r->body = g_strndup (body->data, body->length);
  r->signature = g_strdup (soup_message_headers_get_one (headers, "X-Streamkeeper-Signature"));
  r->authorization = g_strdup (soup_message_headers_get_one (headers, "Authorization"));
  g_ptr_array_add (rx->requests, r);

  if (rx->hang) {
    soup_server_message_pause (msg);
    g_ptr_array_add (rx->hung, g_object_ref (msg));
    return;
  }
  r->status = rx->fail_next > 0 ? 500 : 200;
  if (rx->fail_next > 0)
    rx->fail_next--;
  soup_server_message_set_status (msg, r->status, NULL);
}

static Receiver *
receiver_new (void)
{
  Receiver *rx = g_new0 (Receiver, 1);
  g_autofree char *base = NULL;

  rx->server = soup_server_new (NULL, NULL);
  base = sk_test_server_listen (rx->server);
  rx->url = g_strconcat (base, "/hook", NULL);
  rx->requests = g_ptr_array_new_with_free_func ((GDestroyNotify)request_free);
  rx->hung = g_ptr_array_new_with_free_func (g_object_unref);
  soup_server_add_handler (rx->server, "/hook", receiver_handler, rx, NULL);
  return rx;
}

/* Answers every hung request with 200. */
static void
receiver_release (Receiver *rx)
{
  rx->hang = FALSE;
  for (guint i = 0; i < rx->hung->len; i++) {
    SoupServerMessage *msg = g_ptr_array_index (rx->hung, i);

    soup_server_message_set_status (msg, 200, NULL);
    soup_server_message_unpause (msg);
  }
  g_ptr_array_set_size (rx->hung, 0);
}

static void
receiver_free (Receiver *rx)
{
  receiver_release (rx);
  rt_spin (10);
  soup_server_disconnect (rx->server);
  g_object_unref (rx->server);
  g_ptr_array_unref (rx->requests);
  g_ptr_array_unref (rx->hung);
  g_free (rx->url);
  g_free (rx);
}

static void
receiver_wait (Receiver *rx, guint n_requests, guint timeout_ms)
{
  gint64 deadline = g_get_monotonic_time () + (gint64)timeout_ms * 1000;

  while (rx->requests->len < n_requests) {
    if (g_get_monotonic_time () > deadline)
      g_error ("receiver got %u requests, expected %u", rx->requests->len, n_requests);
    rt_spin (5);
  }
}

static JsonObject *
parse_object (const char *json)
{
  g_autoptr (JsonParser) parser = json_parser_new ();

  g_assert_true (json_parser_load_from_data (parser, json, -1, NULL));
  g_assert_true (JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)));
  return json_object_ref (json_node_get_object (json_parser_get_root (parser)));
}

static gint64
body_n (Request *r)
{
  g_autoptr (JsonObject) o = parse_object (r->body);

  return json_object_get_int_member (o, "n");
}

static const char *
request_event (Request *r, char **keep)
{
  g_autoptr (JsonObject) o = parse_object (r->body);

  *keep = g_strdup (json_object_get_string_member (o, "event"));
  return *keep;
}

static SkConfig *
webhook_config (Receiver *a, Receiver *b)
{
  SkConfig *config = rt_config_new ();

  g_strfreev (config->webhook_urls);
  config->webhook_urls = g_new0 (char *, 3);
  config->webhook_urls[0] = g_strdup (a->url);
  config->webhook_urls[1] = b != NULL ? g_strdup (b->url) : NULL;
  g_free (config->webhook_secret);
  config->webhook_secret = g_strdup (SECRET);
  return config;
}

static void
send_n (SkWebhooks *w, const char *event, gint64 n)
{
  g_autoptr (JsonObject) payload = json_object_new ();

  json_object_set_int_member (payload, "n", n);
  sk_webhooks_send (w, event, payload);
}

static guint8 *
base64url_decode (const char *s, gsize *len)
{
  g_autofree char *std = g_strdup (s);
  GString *padded;

  for (char *p = std; *p; p++)
    *p = *p == '-' ? '+' : *p == '_' ? '/' : *p;
  padded = g_string_new (std);
  while (padded->len % 4 != 0)
    g_string_append_c (padded, '=');
  {
    guint8 *out = g_base64_decode (padded->str, len);

    g_string_free (padded, TRUE);
    return out;
  }
}

/* Both signatures check out against the body, computed independently here. */
static void
assert_signed (Request *r)
{
  g_autofree char *hex = g_compute_hmac_for_string (G_CHECKSUM_SHA256, (const guchar *)SECRET,
                                                    strlen (SECRET), r->body, -1);
  g_autofree char *expected = g_strconcat ("sha256=", hex, NULL);
  g_auto (GStrv) parts = NULL;
  g_autofree char *signing_input = NULL;
  g_autofree guint8 *sig = NULL;
  g_autofree guint8 *claims_json = NULL;
  g_autoptr (GHmac) hmac = NULL;
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  g_autoptr (JsonObject) claims = NULL;
  g_autofree char *claims_str = NULL;
  g_autofree char *body_hash = NULL;
  guint8 mac[32], digest[32];
  gsize mac_len = 32, digest_len = 32, sig_len, claims_len;

  g_assert_cmpstr (r->signature, ==, expected);

  g_assert_nonnull (r->authorization);
  parts = g_strsplit (r->authorization, ".", -1);
  g_assert_cmpuint (g_strv_length (parts), ==, 3);
  signing_input = g_strconcat (parts[0], ".", parts[1], NULL);
  hmac = g_hmac_new (G_CHECKSUM_SHA256, (const guchar *)SECRET, strlen (SECRET));
  g_hmac_update (hmac, (const guchar *)signing_input, -1);
  g_hmac_get_digest (hmac, mac, &mac_len);
  sig = base64url_decode (parts[2], &sig_len);
  g_assert_cmpmem (sig, sig_len, mac, mac_len);

  claims_json = base64url_decode (parts[1], &claims_len);
  claims_str = g_strndup ((const char *)claims_json, claims_len);
  claims = parse_object (claims_str);
  g_checksum_update (sum, (const guchar *)r->body, strlen (r->body));
  g_checksum_get_digest (sum, digest, &digest_len);
  body_hash = g_base64_encode (digest, digest_len);
  g_assert_cmpstr (json_object_get_string_member (claims, "sha256"), ==, body_hash);
}

static void
test_delivered_signed (void)
{
  Receiver *rx = receiver_new ();
  g_autoptr (SkConfig) config = webhook_config (rx, NULL);
  SkWebhooks *w = sk_webhooks_new (config);
  g_autoptr (JsonObject) payload = json_object_new ();
  g_autoptr (JsonObject) body = NULL;
  JsonObject *room = json_object_new ();

  json_object_set_string_member (room, "name", "demo");
  json_object_set_object_member (payload, "room", room);
  json_object_set_string_member (payload, "event", "not-this-one");
  sk_webhooks_send (w, "room_started", payload);
  receiver_wait (rx, 1, 5000);

  body = parse_object (((Request *)g_ptr_array_index (rx->requests, 0))->body);
  g_assert_cmpstr (json_object_get_string_member (body, "event"), ==, "room_started");
  g_assert_true (g_str_has_prefix (json_object_get_string_member (body, "id"), "EV_"));
  g_assert_cmpint (
      ABS (json_object_get_int_member (body, "createdAt") - g_get_real_time () / G_USEC_PER_SEC), <,
      60);
  g_assert_cmpstr (
      json_object_get_string_member (json_object_get_object_member (body, "room"), "name"), ==,
      "demo");
  assert_signed (g_ptr_array_index (rx->requests, 0));

  sk_webhooks_free (w);
  receiver_free (rx);
}

/* A 500 is retried (with backoff) and the events behind it wait: order is kept. */
static void
test_retry_keeps_order (void)
{
  Receiver *rx = receiver_new ();
  g_autoptr (SkConfig) config = webhook_config (rx, NULL);
  SkWebhooks *w = sk_webhooks_new (config);

  rx->fail_next = 2;
  for (gint64 n = 1; n <= 3; n++)
    send_n (w, "participant_joined", n);
  receiver_wait (rx, 5, 10000);
  rt_spin (100);
  g_assert_cmpuint (rx->requests->len, ==, 5);
  for (guint i = 0; i < 5; i++) {
    Request *r = g_ptr_array_index (rx->requests, i);
    static const gint64 expected_n[] = { 1, 1, 1, 2, 3 };
    static const guint expected_status[] = { 500, 500, 200, 200, 200 };

    g_assert_cmpint (body_n (r), ==, expected_n[i]);
    g_assert_cmpuint (r->status, ==, expected_status[i]);
    assert_signed (r);
  }
  /* Every attempt of one event carries the same body (and so the same id). */
  g_assert_cmpstr (((Request *)g_ptr_array_index (rx->requests, 0))->body, ==,
                   ((Request *)g_ptr_array_index (rx->requests, 2))->body);
  sk_webhooks_flush (w, 1000);
  sk_webhooks_free (w);
  receiver_free (rx);
}

static void
test_gives_up (void)
{
  Receiver *rx = receiver_new ();
  g_autoptr (SkConfig) config = webhook_config (rx, NULL);
  SkWebhooks *w;

  config->webhook_max_retries = 1;
  w = sk_webhooks_new (config);
  rx->fail_next = 2;
  g_test_expect_message ("sk-rooms", G_LOG_LEVEL_WARNING, "webhook*giving up*after 2 attempts*");
  send_n (w, "track_published", 1);
  send_n (w, "track_published", 2);
  receiver_wait (rx, 3, 10000);
  g_test_assert_expected_messages ();
  g_assert_cmpint (body_n (g_ptr_array_index (rx->requests, 1)), ==, 1);
  g_assert_cmpint (body_n (g_ptr_array_index (rx->requests, 2)), ==, 2);
  g_assert_cmpuint (((Request *)g_ptr_array_index (rx->requests, 2))->status, ==, 200);
  sk_webhooks_free (w);
  receiver_free (rx);
}

/* A receiver that never answers delays only itself. */
static void
test_hanging_receiver (void)
{
  Receiver *slow = receiver_new ();
  Receiver *fast = receiver_new ();
  g_autoptr (SkConfig) config = webhook_config (slow, fast);
  SkWebhooks *w = sk_webhooks_new (config);

  slow->hang = TRUE;
  for (gint64 n = 1; n <= 3; n++)
    send_n (w, "participant_left", n);
  receiver_wait (fast, 3, 5000);
  g_assert_cmpint (body_n (g_ptr_array_index (fast->requests, 2)), ==, 3);
  /* One in flight, the rest queued behind it. */
  g_assert_cmpuint (slow->requests->len, ==, 1);

  /* Freeing with a POST in flight cancels it cleanly. */
  sk_webhooks_free (w);
  rt_spin (20);
  receiver_free (slow);
  receiver_free (fast);
}

/* The per-URL queue is bounded: the oldest waiting events are dropped, never the newest. */
static void
test_queue_bound (void)
{
  Receiver *rx = receiver_new ();
  g_autoptr (SkConfig) config = webhook_config (rx, NULL);
  SkWebhooks *w;

  config->webhook_queue_max = 3;
  w = sk_webhooks_new (config);
  rx->hang = TRUE;
  send_n (w, "track_unpublished", 1);
  receiver_wait (rx, 1, 5000);
  g_test_expect_message ("sk-rooms", G_LOG_LEVEL_WARNING, "webhook*queue full*");
  for (gint64 n = 2; n <= 10; n++)
    send_n (w, "track_unpublished", n);
  g_test_assert_expected_messages ();

  receiver_release (rx);
  receiver_wait (rx, 4, 5000);
  sk_webhooks_flush (w, 2000);
  g_assert_cmpuint (rx->requests->len, ==, 4);
  g_assert_cmpint (body_n (g_ptr_array_index (rx->requests, 0)), ==, 1);
  g_assert_cmpint (body_n (g_ptr_array_index (rx->requests, 1)), ==, 8);
  g_assert_cmpint (body_n (g_ptr_array_index (rx->requests, 2)), ==, 9);
  g_assert_cmpint (body_n (g_ptr_array_index (rx->requests, 3)), ==, 10);
  sk_webhooks_free (w);
  receiver_free (rx);
}

/* Room events become LiveKit-named webhooks, in log order, with the same fields. */
static void
test_room_webhooks (void)
{
  Receiver *rx = receiver_new ();
  g_autoptr (SkConfig) config = webhook_config (rx, NULL);
  g_autoptr (SkStore) store = sk_store_memory_new ();
  g_autoptr (GstCaps) caps = gst_caps_from_string ("audio/x-opus");
  g_autoptr (GString) names = g_string_new (NULL);
  g_autoptr (JsonObject) joined = NULL;
  g_autoptr (JsonObject) published = NULL;
  g_autoptr (JsonObject) left = NULL;
  SkWebhooks *w = sk_webhooks_new (config);
  SkRoomManager *rooms = sk_room_manager_new (config, store, w, NULL);
  SkParticipant *p;
  SkTrack *track;
  g_autofree char *psid = NULL;
  g_autofree char *tsid = NULL;

  p = sk_room_manager_join (rooms, "demo", "obs-1", "Cam", "ingress", NULL, NULL, NULL);
  psid = g_strdup (sk_participant_get_sid (p));
  track = sk_participant_publish_track (p, SK_TRACK_KIND_AUDIO, caps);
  tsid = g_strdup (sk_track_get_sid (track));
  sk_participant_leave (p, SK_REASON_PUBLISHER_LOST);
  receiver_wait (rx, 6, 5000);

  for (guint i = 0; i < rx->requests->len; i++) {
    g_autofree char *event = NULL;

    g_string_append_printf (names, "%s%s", i ? "," : "",
                            request_event (g_ptr_array_index (rx->requests, i), &event));
  }
  g_assert_cmpstr (names->str, ==,
                   "room_started,participant_joined,track_published,track_unpublished,"
                   "participant_left,room_finished");

  joined = parse_object (((Request *)g_ptr_array_index (rx->requests, 1))->body);
  g_assert_cmpstr (
      json_object_get_string_member (json_object_get_object_member (joined, "room"), "name"), ==,
      "demo");
  g_assert_cmpstr (
      json_object_get_string_member (json_object_get_object_member (joined, "participant"), "sid"),
      ==, psid);
  g_assert_cmpstr (json_object_get_string_member (
                       json_object_get_object_member (joined, "participant"), "identity"),
                   ==, "obs-1");
  published = parse_object (((Request *)g_ptr_array_index (rx->requests, 2))->body);
  g_assert_cmpstr (
      json_object_get_string_member (json_object_get_object_member (published, "track"), "sid"), ==,
      tsid);
  g_assert_cmpstr (
      json_object_get_string_member (json_object_get_object_member (published, "track"), "codec"),
      ==, "opus");
  left = parse_object (((Request *)g_ptr_array_index (rx->requests, 4))->body);
  g_assert_cmpstr (json_object_get_string_member (left, "reason"), ==, "publisher_lost");

  sk_room_manager_free (rooms);
  sk_webhooks_free (w);
  receiver_free (rx);
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/webhooks/delivered-signed", test_delivered_signed);
  g_test_add_func ("/webhooks/retry-keeps-order", test_retry_keeps_order);
  g_test_add_func ("/webhooks/gives-up", test_gives_up);
  g_test_add_func ("/webhooks/hanging-receiver", test_hanging_receiver);
  g_test_add_func ("/webhooks/queue-bound", test_queue_bound);
  g_test_add_func ("/webhooks/room-webhooks", test_room_webhooks);
  return g_test_run ();
}
