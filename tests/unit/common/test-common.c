/* Unit tests: ids, secrets, constant-time compare, hashing. */
#include <string.h>

#include "common/sk-common.h"

static gboolean
all_base62 (const char *s)
{
  for (; *s; s++)
    if (!g_ascii_isalnum (*s))
      return FALSE;
  return TRUE;
}

static void
test_id_shape (void)
{
  g_autoptr (GHashTable) seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);

  for (int i = 0; i < 2000; i++) {
    char *id = sk_id_new ("IN_");
    g_assert_true (g_str_has_prefix (id, "IN_"));
    g_assert_cmpuint (strlen (id), ==, 3 + 16);
    g_assert_true (all_base62 (id + 3));
    g_assert_true (g_hash_table_add (seen, id)); /* no repeats */
  }
}

static void
test_secret_length (void)
{
  /* ceil(bits / log2(62)) characters. */
  struct {
    guint bits;
    gsize chars;
  } cases[] = { { 128, 22 }, { 192, 33 }, { 256, 43 }, { 1, 1 } };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autofree char *s = sk_secret_new (cases[i].bits);
    g_assert_cmpuint (strlen (s), ==, cases[i].chars);
    g_assert_true (all_base62 (s));
  }
}

/* Every base62 symbol should appear about equally often: catches a broken alphabet mapping or
 * a modulo bias towards the first symbols. */
static void
test_secret_distribution (void)
{
  guint counts[128] = { 0 };
  const int n = 4000;
  gsize total = 0;

  for (int i = 0; i < n; i++) {
    g_autofree char *s = sk_secret_new (128);
    for (const char *p = s; *p; p++)
      counts[(guchar)*p]++, total++;
  }
  double expected = (double)total / 62;
  double chi2 = 0;
  int symbols = 0;
  for (int c = 0; c < 128; c++) {
    if (!g_ascii_isalnum (c)) {
      g_assert_cmpuint (counts[c], ==, 0);
      continue;
    }
    symbols++;
    chi2 += (counts[c] - expected) * (counts[c] - expected) / expected;
  }
  g_assert_cmpint (symbols, ==, 62);
  /* 61 degrees of freedom: p < 1e-6 beyond ~ 130. */
  g_assert_cmpfloat (chi2, <, 130);
}

static void
test_secure_equal (void)
{
  g_assert_true (sk_secure_equal ("abc", "abc"));
  g_assert_true (sk_secure_equal ("", ""));
  g_assert_false (sk_secure_equal ("abc", "abd"));
  g_assert_false (sk_secure_equal ("abc", "ab"));
  g_assert_false (sk_secure_equal ("ab", "abc"));
  g_assert_false (sk_secure_equal ("abc", ""));
  g_assert_false (sk_secure_equal ("", "abc"));
  g_assert_false (sk_secure_equal (NULL, "abc"));
  g_assert_false (sk_secure_equal ("abc", NULL));
  g_assert_false (sk_secure_equal (NULL, NULL));
  /* A prefix padded with what the compare pads with must still differ. */
  g_assert_false (sk_secure_equal ("a", "a\x01"));
}

static void
test_sha256 (void)
{
  g_autofree char *h = sk_sha256_hex ("abc");
  g_assert_cmpstr (h, ==, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void
test_now_ms (void)
{
  gint64 a = sk_now_ms ();
  g_assert_cmpint (a, >, 1700000000000); /* after Nov 2023: milliseconds, not seconds */
  g_assert_cmpint (sk_now_ms (), >=, a);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/common/id-shape", test_id_shape);
  g_test_add_func ("/common/secret-length", test_secret_length);
  g_test_add_func ("/common/secret-distribution", test_secret_distribution);
  g_test_add_func ("/common/secure-equal", test_secure_equal);
  g_test_add_func ("/common/sha256", test_sha256);
  g_test_add_func ("/common/now-ms", test_now_ms);
  return g_test_run ();
}
