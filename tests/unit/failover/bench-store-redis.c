/*
 * What durability costs: latency of one awaited append on the Redis store over loopback,
 * first with a lone master, then with a replica attached (each append then waits for
 * WAIT 1). Prints figures; asserts nothing about time.
 *   meson test -C build --benchmark store-redis-wait   (inside unshare -n)
 */
#include "../rooms/rooms-test-util.h"
#include "sk-test-redis.h"

#define N_APPENDS 2000

static int
compare_i64 (gconstpointer a, gconstpointer b)
{
  gint64 x = *(const gint64 *)a, y = *(const gint64 *)b;

  return (x > y) - (x < y);
}

static void
measure (SkStore *store, const char *label, guint64 first_seq)
{
  g_autoptr (GArray) samples = g_array_sized_new (FALSE, FALSE, sizeof (gint64), N_APPENDS);
  gint64 total = 0;

  for (guint i = 0; i < N_APPENDS; i++) {
    RtAsync a = { 0 };
    g_autoptr (GError) error = NULL;
    gint64 start = g_get_monotonic_time (), took;

    sk_store_append_event_async (store, "bench", 0, first_seq + i,
                                 "{\"event\":\"TrackPublished\",\"room\":\"bench\"}", NULL,
                                 rt_async_cb, &a);
    /* Block in poll (the test helpers nap between polls, which would blur the figures). */
    while (!a.done)
      g_main_context_iteration (NULL, TRUE);
    if (!sk_store_append_event_finish (store, a.result, &error))
      g_error ("append: %s", error->message);
    took = g_get_monotonic_time () - start;
    total += took;
    g_array_append_val (samples, took);
    rt_async_clear (&a);
  }
  g_array_sort (samples, compare_i64);
  g_print ("%-22s %u appends: mean %5.0f us, p50 %5" G_GINT64_FORMAT " us, p95 %5" G_GINT64_FORMAT
           " us, max %6" G_GINT64_FORMAT " us\n",
           label, N_APPENDS, (double)total / N_APPENDS,
           g_array_index (samples, gint64, N_APPENDS / 2),
           g_array_index (samples, gint64, N_APPENDS * 95 / 100),
           g_array_index (samples, gint64, N_APPENDS - 1));
}

int
main (int argc, char **argv)
{
  TrServer master = { 0 }, replica = { 0 };
  g_autoptr (SkStore) store = NULL;
  g_autofree char *uri = NULL;
  g_autofree char *master_port = NULL;

  if (!tr_have_redis ()) {
    g_print ("redis-server is not installed: skipped\n");
    return 77;
  }
  tr_server_start (&master, NULL);
  uri = g_strdup_printf ("redis://127.0.0.1:%d", master.port);
  store = sk_store_new (uri, NULL);

  measure (store, "master alone:", 1);

  master_port = g_strdup_printf ("%d", master.port);
  tr_server_start (&replica,
                   (const char *const[]){ "--replicaof", "127.0.0.1", master_port, NULL });
  tr_wait_info (replica.port, "replication", "master_link_status", "up");
  rt_spin (1500); /* the store learns of the replica from its periodic ROLE */
  measure (store, "with replica (WAIT 1):", 1 + N_APPENDS);

  g_clear_pointer (&store, sk_store_free);
  tr_server_clear (&replica);
  tr_server_clear (&master);
  return 0;
}
