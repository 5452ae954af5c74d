/* streamkeeper: the daemon. Wires the modules together and runs the main loop. */
#define G_LOG_DOMAIN "streamkeeper"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <glib-unix.h>
#include <gst/gst.h>

#include "sk-build-config.h"
#include "common/sk-common.h"
#include "common/sk-config.h"
#include "common/sk-http.h"
#include "failover/sk-cluster.h"
#include "failover/sk-store.h"
#include "ingress/rtmp/sk-rtmp-server.h"
#include "ingress/sk-ingress.h"
#include "ingress/whip/sk-whip-server.h"
#include "pipelines/sk-pipeline.h"
#include "rooms/sk-rooms.h"
#include "rooms/sk-webhooks.h"
#include "rooms/sk-webrtc.h"

#if SK_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

/* Bounds on a clean shutdown: a stuck store or webhook receiver must not hold the exit. */
#define SHUTDOWN_ROOMS_TIMEOUT_MS 10000
#define SHUTDOWN_WEBHOOKS_TIMEOUT_MS 3000
/* The largest body any endpoint takes (API JSON 64 KiB, SDP offers a few KiB). */
#define MAX_REQUEST_BODY (1024 * 1024)

typedef enum {
  NODE_STARTING,
  NODE_RUNNING,
  NODE_DRAINING,
} NodeState;

typedef struct {
  SkConfig *config;
  SkStore *store;
  SkCluster *cluster;
  SkWebhooks *webhooks;
  SkRoomManager *rooms;
  SkIngressRegistry *registry;
  SoupServer *http;
  SkRtmpServer *rtmp;
  SkWhipServer *whip;
  GMainLoop *loop;
  NodeState state;
  guint shutdown_timeout_id;
  guint rooms_moved;
  guint drain_timeout_id;
  gboolean sessions_closed;
} Node;

static void
notify (const char *state)
{
#if SK_HAVE_SYSTEMD
  sd_notify (0, state);
#endif
}

static void
handle_healthz (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                gpointer user_data)
{
  g_autoptr (JsonNode) node = json_from_string ("{\"status\":\"ok\"}", NULL);
  sk_http_reply_json (msg, SOUP_STATUS_OK, node);
}

static void
handle_readyz (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
               gpointer user_data)
{
  Node *n = user_data;
  const char *status = "ready";

  if (n->state == NODE_STARTING)
    status = "starting";
  else if (n->state == NODE_DRAINING)
    status = "draining";
  else if (sk_cluster_get_state (n->cluster) != SK_CLUSTER_MEMBER)
    status = sk_cluster_state_to_string (sk_cluster_get_state (n->cluster));
  else if (!sk_ingress_registry_is_ready (n->registry))
    status = "not_accepting"; /* full (max_streams) or fenced */

  g_autoptr (JsonObject) o = json_object_new ();
  json_object_set_string_member (o, "status", status);
  json_object_set_string_member (o, "node", n->config->node_id);
  json_object_set_int_member (o, "sessions", sk_ingress_registry_get_n_sessions (n->registry));
  g_autoptr (JsonNode) node = json_node_init_object (json_node_alloc (), o);

  gboolean ready = g_str_equal (status, "ready");
  if (!ready)
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Retry-After",
                                  "2");
  sk_http_reply_json (msg, ready ? SOUP_STATUS_OK : SOUP_STATUS_SERVICE_UNAVAILABLE, node);
}

/* Published with the lease: what other nodes and operators may want to know about us. */
static JsonNode *
node_info (gpointer user_data)
{
  Node *n = user_data;
  JsonObject *o = json_object_new ();
  JsonNode *node;

  json_object_set_int_member (o, "sessions", sk_ingress_registry_get_n_sessions (n->registry));
  json_object_set_boolean_member (
      o, "accepting", n->state == NODE_RUNNING && sk_ingress_registry_is_ready (n->registry));
  json_object_set_int_member (o, "rtmp_port", n->config->rtmp_port);
  json_object_set_int_member (o, "rooms", sk_room_manager_get_n_hosted (n->rooms));
  json_object_set_int_member (o, "max_rooms", n->config->cluster_max_rooms);
  node = json_node_init_object (json_node_alloc (), o);
  json_object_unref (o);
  return node;
}

static gboolean
on_watchdog (gpointer user_data)
{
  notify ("WATCHDOG=1");
  return G_SOURCE_CONTINUE;
}

static void
start_watchdog (void)
{
#if SK_HAVE_SYSTEMD
  uint64_t usec = 0;

  if (sd_watchdog_enabled (0, &usec) > 0 && usec > 0) {
    guint interval_ms = (guint)MAX (usec / 2000, 1);
    g_timeout_add (interval_ms, on_watchdog, NULL);
    g_message ("systemd watchdog: pinging every %u ms", interval_ms);
  }
#endif
}

static gboolean
on_shutdown_timeout (gpointer user_data)
{
  Node *n = user_data;

  n->shutdown_timeout_id = 0;
  g_warning ("shutdown: rooms did not finish within %d ms, exiting anyway",
             SHUTDOWN_ROOMS_TIMEOUT_MS);
  g_main_loop_quit (n->loop);
  return G_SOURCE_REMOVE;
}

static void
on_cluster_left (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Node *n = user_data;
  g_autoptr (GError) error = NULL;

  if (!sk_cluster_leave_finish (n->cluster, res, &error))
    g_warning ("shutdown: leaving the cluster: %s", error->message);
  g_clear_handle_id (&n->shutdown_timeout_id, g_source_remove);
  g_main_loop_quit (n->loop);
}

static void
on_rooms_shut_down (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Node *n = user_data;
  g_autoptr (GError) error = NULL;

  if (!sk_room_manager_shutdown_finish (n->rooms, res, &error))
    g_warning ("shutdown: %s", error->message);
  if (n->webhooks)
    sk_webhooks_flush (n->webhooks, SHUTDOWN_WEBHOOKS_TIMEOUT_MS);
  /* Our rooms are finished and released: retire at once rather than make others wait for
   * the lease to run out. */
  sk_cluster_leave_async (n->cluster, on_cluster_left, n);
}

/* Runs after the registry's close funcs (idles queued before this one): no encoder is left
 * to be told anything, so the listener can go, then the rooms write their last events. */
static gboolean
shutdown_rooms (gpointer user_data)
{
  Node *n = user_data;

  g_clear_pointer (&n->rtmp, sk_rtmp_server_free);
  n->shutdown_timeout_id = g_timeout_add (SHUTDOWN_ROOMS_TIMEOUT_MS, on_shutdown_timeout, n);
  sk_room_manager_shutdown_async (n->rooms, on_rooms_shut_down, n);
  return G_SOURCE_REMOVE;
}

/* After the ingress sessions closed, their proxied participants' DELETEs go out to the new
 * hosts; give them this long before the rooms and the cluster membership are wound up. */
#define DRAIN_DELETE_MS 500
/* Handed-over rooms: time for the new hosts to rebuild them and for our publications to
 * reach them, before the encoders are told to go. */
#define DRAIN_SETTLE_MS 1000
/* The hand-overs themselves are a few store round trips. */
#define DRAIN_TIMEOUT_MS 5000

static gboolean
close_sessions (gpointer user_data)
{
  Node *n = user_data;

  if (n->sessions_closed)
    return G_SOURCE_REMOVE;
  n->sessions_closed = TRUE;
  g_clear_handle_id (&n->drain_timeout_id, g_source_remove);

  g_message ("shutting down: %u live sessions end with server_shutdown",
             sk_ingress_registry_get_n_sessions (n->registry));
  sk_ingress_registry_close_all (n->registry, SK_REASON_SERVER_SHUTDOWN);
  if (n->rooms_moved > 0)
    g_timeout_add (DRAIN_DELETE_MS, shutdown_rooms, n);
  else
    g_idle_add (shutdown_rooms, n);
  return G_SOURCE_REMOVE;
}

static void
on_drained (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Node *n = user_data;
  g_autoptr (GError) error = NULL;

  if (!sk_room_manager_drain_finish (n->rooms, res, &n->rooms_moved, &error))
    g_warning ("drain: %s", error->message);
  if (n->sessions_closed)
    return; /* too late: the drain timed out and the shutdown went on */
  g_clear_handle_id (&n->drain_timeout_id, g_source_remove);
  if (n->rooms_moved > 0) {
    g_message ("drain: %u room(s) handed over to other nodes", n->rooms_moved);
    g_timeout_add (DRAIN_SETTLE_MS, close_sessions, n);
  } else {
    close_sessions (n);
  }
}

static gboolean
on_drain_timeout (gpointer user_data)
{
  Node *n = user_data;

  n->drain_timeout_id = 0;
  g_warning ("drain: rooms not handed over within %d ms; letting the encoders go anyway",
             DRAIN_TIMEOUT_MS);
  close_sessions (n);
  return G_SOURCE_REMOVE;
}

/* SIGTERM, SIGINT or POST /v1/node/drain: not ready any more, rooms go to other nodes, then
 * the encoders are let go (they reconnect through the load balancer), then we exit. */
static void
begin_shutdown (Node *n)
{
  n->state = NODE_DRAINING; /* /readyz answers 503 from now on */
  notify ("STOPPING=1");
  sk_ingress_registry_set_accepting (n->registry, FALSE);
  /* A store that does not answer must not hold the node: the encoders go anyway. */
  n->drain_timeout_id = g_timeout_add (DRAIN_TIMEOUT_MS, on_drain_timeout, n);
  sk_room_manager_drain_async (n->rooms, on_drained, n);
}

static gboolean
on_signal (gpointer user_data)
{
  Node *n = user_data;

  if (n->state == NODE_DRAINING) {
    g_message ("second signal: exiting now");
    g_main_loop_quit (n->loop);
    return G_SOURCE_CONTINUE;
  }
  begin_shutdown (n);
  return G_SOURCE_CONTINUE;
}

static void
handle_drain (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
              gpointer user_data)
{
  Node *n = user_data;

  if (soup_server_message_get_method (msg) != SOUP_METHOD_POST) {
    sk_http_reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed", "use POST");
    return;
  }
  if (!sk_http_require_token (msg, n->config->api_token))
    return;
  g_autoptr (JsonObject) o = json_object_new ();
  json_object_set_string_member (o, "status", "draining");
  json_object_set_string_member (o, "node", n->config->node_id);
  g_autoptr (JsonNode) node = json_node_init_object (json_node_alloc (), o);
  sk_http_reply_json (msg, SOUP_STATUS_ACCEPTED, node);
  if (n->state != NODE_DRAINING)
    begin_shutdown (n);
}

static gboolean
listen_http (Node *n, GError **error)
{
  g_autoptr (GInetAddress) addr = g_inet_address_new_from_string (n->config->bind);
  g_autoptr (GSocketAddress) sa = g_inet_socket_address_new (addr, n->config->http_port);

  n->http = soup_server_new ("server-header", "streamkeeper/" SK_VERSION " ", NULL);
  sk_http_limit_request_bodies (n->http, MAX_REQUEST_BODY);
  soup_server_add_handler (n->http, "/healthz", handle_healthz, n, NULL);
  soup_server_add_handler (n->http, "/readyz", handle_readyz, n, NULL);
  soup_server_add_handler (n->http, "/v1/node/drain", handle_drain, n, NULL);
  sk_cluster_attach_http (n->cluster, n->http);
  sk_room_manager_attach_http (n->rooms, n->http);
  sk_ingress_registry_attach_http (n->registry, n->http);
  n->whip = sk_whip_server_new (n->config, n->registry);
  sk_whip_server_enable_internal (n->whip, n->rooms);
  sk_whip_server_attach_http (n->whip, n->http);
  return soup_server_listen (n->http, sa, 0, error);
}

static int
run (Node *n, int argc, char **argv)
{
  g_autoptr (GError) error = NULL;

  n->config = sk_config_new ();
  if (!sk_config_parse_args (n->config, &argc, &argv, &error)
      || !sk_config_finalize (n->config, &error)) {
    fprintf (stderr, "streamkeeper: %s\n", error->message);
    return 2;
  }

  n->store = sk_store_new (n->config->store, &error);
  if (n->store == NULL) {
    g_printerr ("streamkeeper: store %s: %s\n", n->config->store, error->message);
    return 1;
  }
  /* Before the node takes anything: its first stream should not load plugins. */
  sk_pipeline_warm_up (n->config);
  sk_webrtc_warm_up ();
  n->webhooks = sk_webhooks_new (n->config);
  n->rooms = sk_room_manager_new (n->config, n->store, n->webhooks, &error);
  if (n->rooms == NULL) {
    g_printerr ("streamkeeper: rooms: %s\n", error->message);
    return 1;
  }
  /* With the memory store this is a cluster of one; the code path is the same. */
  n->cluster = sk_cluster_new (n->config, n->store);
  sk_cluster_set_info_func (n->cluster, node_info, n);
  sk_room_manager_set_cluster (n->rooms, n->cluster);
  n->registry = sk_ingress_registry_new (n->config, n->store, n->rooms, n->webhooks);

  if (!listen_http (n, &error)) {
    g_printerr ("streamkeeper: HTTP on %s:%u: %s\n", n->config->bind, n->config->http_port,
                error->message);
    return 1;
  }
  n->rtmp = sk_rtmp_server_new (n->config, n->registry, &error);
  if (n->rtmp == NULL) {
    g_printerr ("streamkeeper: RTMP on %s:%u: %s\n", n->config->bind, n->config->rtmp_port,
                error->message);
    return 1;
  }

  g_unix_signal_add (SIGINT, on_signal, n);
  g_unix_signal_add (SIGTERM, on_signal, n);

  g_message ("streamkeeper %s, node %s, store %s, state in %s", SK_VERSION, n->config->node_id,
             n->config->store, n->config->state_dir);
  g_message ("HTTP (API, WHIP, WHEP, events, /healthz, /readyz) on %s:%u", n->config->bind,
             n->config->http_port);
  g_message ("RTMP on %s:%u: publish to rtmp://%s:%u/live with an ingress stream key",
             n->config->bind, n->config->rtmp_port, n->config->public_host, n->config->rtmp_port);
  sk_cluster_start (n->cluster);
  n->state = NODE_RUNNING;
  notify ("READY=1");
  start_watchdog ();

  g_main_loop_run (n->loop);
  g_message ("stopped");
  return 0;
}

int
main (int argc, char **argv)
{
  Node node = { 0 };
  int status;

  /* Writes to a closed socket must fail with EPIPE, not kill the daemon. */
  signal (SIGPIPE, SIG_IGN);
  gst_init (&argc, &argv);
  node.loop = g_main_loop_new (NULL, FALSE);

  status = run (&node, argc, argv);

  g_clear_handle_id (&node.shutdown_timeout_id, g_source_remove);
  g_clear_handle_id (&node.drain_timeout_id, g_source_remove);
  /* Front ends first (they end their sessions), then what they feed; the HTTP server goes
   * after the rooms so their open responses (SSE) are finished on live connections. */
  g_clear_pointer (&node.rtmp, sk_rtmp_server_free);
  g_clear_pointer (&node.whip, sk_whip_server_free);
  g_clear_pointer (&node.registry, sk_ingress_registry_free);
  g_clear_pointer (&node.rooms, sk_room_manager_free);
  g_clear_pointer (&node.cluster, sk_cluster_free);
  if (node.http)
    soup_server_disconnect (node.http);
  g_clear_object (&node.http);
  g_clear_pointer (&node.webhooks, sk_webhooks_free);
  g_clear_pointer (&node.store, sk_store_free);
  g_clear_pointer (&node.config, sk_config_free);
  g_main_loop_unref (node.loop);
  gst_deinit ();
  return status;
}
