/*
 * Fast death detection (failover/sk-peers.c) between two in-process peers over real loopback
 * HTTP: a watched node whose listener goes away is reported dead (its watched incarnation),
 * one that still accepts connections but does not answer is not, and a wrong cluster secret
 * gets no watch.
 */
#include <gio/gio.h>

#include "common/sk-config.h"
#include "failover/sk-peers.h"

typedef struct {
  char *node;
  guint64 incarnation;
  guint calls;
} Dead;

static void
on_dead (const char *node, guint64 incarnation, const char *reason, gpointer user_data)
{
  Dead *d = user_data;

  g_free (d->node);
  d->node = g_strdup (node);
  d->incarnation = incarnation;
  d->calls++;
}

static SkConfig *
config_new (const char *node_id, const char *secret)
{
  SkConfig *config = sk_config_new ();

  g_free (config->node_id);
  config->node_id = g_strdup (node_id);
  g_free (config->cluster_secret);
  config->cluster_secret = g_strdup (secret);
  return config;
}

static void
spin_ms (guint ms)
{
  gint64 until = g_get_monotonic_time () + (gint64)ms * 1000;

  while (g_get_monotonic_time () < until)
    g_main_context_iteration (NULL, FALSE), g_usleep (1000);
}

/* Spins until @cond holds (checked every ms), at most @timeout_ms. */
#define SPIN_UNTIL(cond, timeout_ms)                                                               \
  G_STMT_START                                                                                     \
  {                                                                                                \
    gint64 deadline_ = g_get_monotonic_time () + (gint64)(timeout_ms)*1000;                        \
    while (!(cond) && g_get_monotonic_time () < deadline_)                                         \
      g_main_context_iteration (NULL, FALSE), g_usleep (1000);                                     \
    g_assert_true (cond);                                                                          \
  }                                                                                                \
  G_STMT_END

static char *
serve (SoupServer *server)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) sa = g_inet_socket_address_new (lo, 0);
  g_autoptr (GSocketAddress) bound = NULL;
  GSList *listeners;

  g_assert_true (soup_server_listen (server, sa, 0, &error));
  g_assert_no_error (error);
  /* The port from the socket itself (soup_server_get_uris leaks an address in libsoup 3.2). */
  listeners = soup_server_get_listeners (server);
  bound = g_socket_get_local_address (listeners->data, &error);
  g_slist_free (listeners);
  g_assert_no_error (error);
  return g_strdup_printf ("http://127.0.0.1:%u",
                          g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound)));
}

static void
test_dead_when_nothing_listens (void)
{
  g_autoptr (SkConfig) ca = config_new ("a", "secret");
  g_autoptr (SkConfig) cb = config_new ("b", "secret");
  Dead dead = { 0 };
  SkPeers *a = sk_peers_new (ca, on_dead, &dead);
  g_autoptr (SkPeers) b = sk_peers_new (cb, on_dead, &dead);
  SoupServer *server = soup_server_new (NULL, NULL);
  g_autofree char *url = NULL;

  sk_peers_attach_http (a, server);
  sk_peers_set_incarnation (a, 7);
  url = serve (server);

  sk_peers_begin_sync (b);
  sk_peers_want (b, "a", 7, url);
  sk_peers_end_sync (b);
  SPIN_UNTIL (sk_peers_get_n_connected (b) == 1 && sk_peers_get_n_served (a) == 1, 3000);
  spin_ms (100);
  g_assert_cmpuint (dead.calls, ==, 0);

  /* The process goes away: its listener and its connections close. */
  sk_peers_free (a);
  soup_server_disconnect (server);
  g_object_unref (server);
  SPIN_UNTIL (dead.calls == 1, 3000);
  g_assert_cmpstr (dead.node, ==, "a");
  g_assert_cmpuint (dead.incarnation, ==, 7);
  /* Reported once; the view drops the watch afterwards. */
  spin_ms (300);
  g_assert_cmpuint (dead.calls, ==, 1);
  sk_peers_begin_sync (b);
  sk_peers_end_sync (b);
  g_assert_cmpuint (sk_peers_get_n_connected (b), ==, 0);
  g_free (dead.node);
}

static void
test_listening_but_silent_is_not_dead (void)
{
  g_autoptr (SkConfig) cb = config_new ("b", "secret");
  Dead dead = { 0 };
  g_autoptr (SkPeers) b = sk_peers_new (cb, on_dead, &dead);
  g_autoptr (GError) error = NULL;
  /* A listening socket nobody accepts from: the kernel completes handshakes (a SIGSTOPped
   * node looks like this). */
  g_autoptr (GSocket) sock
      = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, &error);
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) sa = g_inet_socket_address_new (lo, 0);
  g_autoptr (GSocketAddress) bound = NULL;
  g_autofree char *url = NULL;

  g_assert_no_error (error);
  g_assert_true (g_socket_bind (sock, sa, TRUE, &error));
  g_socket_set_listen_backlog (sock, 16);
  g_assert_true (g_socket_listen (sock, &error));
  bound = g_socket_get_local_address (sock, &error);
  url = g_strdup_printf ("http://127.0.0.1:%u",
                         g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound)));

  g_test_expect_message ("sk-store", G_LOG_LEVEL_MESSAGE, "*still accepts connections*");
  sk_peers_begin_sync (b);
  sk_peers_want (b, "a", 3, url);
  sk_peers_end_sync (b);
  /* The request times out (3 s), the probe connects: watched again, never reported. */
  spin_ms (4500);
  g_test_assert_expected_messages ();
  g_assert_cmpuint (dead.calls, ==, 0);
}

static void
test_wrong_secret_is_refused (void)
{
  g_autoptr (SkConfig) ca = config_new ("a", "secret");
  g_autoptr (SkConfig) cb = config_new ("b", "not-the-secret");
  Dead dead = { 0 };
  g_autoptr (SkPeers) a = sk_peers_new (ca, on_dead, &dead);
  g_autoptr (SkPeers) b = sk_peers_new (cb, on_dead, &dead);
  g_autoptr (SoupServer) server = soup_server_new (NULL, NULL);
  g_autofree char *url = NULL;

  sk_peers_attach_http (a, server);
  url = serve (server);
  g_test_expect_message ("sk-store", G_LOG_LEVEL_WARNING, "*refuses to be watched (401*");
  sk_peers_begin_sync (b);
  sk_peers_want (b, "a", 1, url);
  sk_peers_end_sync (b);
  SPIN_UNTIL (sk_peers_get_n_served (a) == 0 && dead.calls == 0, 100);
  spin_ms (500);
  g_test_assert_expected_messages ();
  g_assert_cmpuint (sk_peers_get_n_served (a), ==, 0);
  g_assert_cmpuint (sk_peers_get_n_connected (b), ==, 0);
  g_assert_cmpuint (dead.calls, ==, 0);
  sk_peers_clear (b);
  soup_server_disconnect (server);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/peers/dead-when-nothing-listens", test_dead_when_nothing_listens);
  g_test_add_func ("/peers/listening-but-silent-is-not-dead",
                   test_listening_but_silent_is_not_dead);
  g_test_add_func ("/peers/wrong-secret-is-refused", test_wrong_secret_is_refused);
  return g_test_run ();
}
