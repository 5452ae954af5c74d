/* Unit tests of the memory state store: the shared store contract, plus URI parsing. */
#include "../failover/store-contract.h"

static void
test_store_new (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (SkStore) memory = sk_store_new ("memory", &error);

  g_assert_no_error (error);
  g_assert_nonnull (memory);
  g_assert_cmpstr (memory->uri, ==, "memory");

  /* Malformed Redis URIs are refused up front (well-formed ones: tests/unit/failover). */
  g_assert_null (sk_store_new ("redis://127.0.0.1", &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_INVALID);
  g_clear_error (&error);
  g_assert_null (sk_store_new ("sentinel://127.0.0.1:26379", &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_INVALID);
  g_clear_error (&error);

  g_assert_null (sk_store_new ("etcd://x", &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_INVALID);
}

static void
run_contract (gconstpointer data)
{
  ScTestFunc func = (ScTestFunc)data;
  g_autoptr (SkStore) store = sk_store_memory_new ();

  func (store);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/store/new", test_store_new);
  for (guint i = 0; i < G_N_ELEMENTS (sc_tests); i++) {
    g_autofree char *path = g_strdup_printf ("/store/%s", sc_tests[i].name);

    g_test_add_data_func (path, (gconstpointer)sc_tests[i].func, run_contract);
  }
  return g_test_run ();
}
