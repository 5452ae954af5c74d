/* streamkeeper: ids, secrets and small helpers shared by every module. */
#include "common/sk-common.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

GQuark
sk_error_quark (void)
{
  return g_quark_from_static_string ("sk-error-quark");
}

static const char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

gint64
sk_now_ms (void)
{
  return g_get_real_time () / 1000;
}

void
sk_random_bytes (guint8 *buf, gsize len)
{
  while (len > 0) {
    ssize_t n = getrandom (buf, len, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      /* Without a CSPRNG no key or token can be trusted: stop rather than degrade. */
      g_error ("getrandom failed: %s", g_strerror (errno));
    }
    buf += n;
    len -= (gsize)n;
  }
}

/* Fills @out with @n base62 characters drawn without modulo bias: a byte is used only when it
 * falls below 248 (= 4 × 62), so each character carries log2(62) ≈ 5.95 bits. */
static void
fill_base62 (char *out, gsize n)
{
  guint8 pool[64];
  gsize avail = 0, pos = 0;

  for (gsize i = 0; i < n;) {
    if (pos == avail) {
      sk_random_bytes (pool, sizeof pool);
      avail = sizeof pool;
      pos = 0;
    }
    guint8 b = pool[pos++];
    if (b < 248)
      out[i++] = base62[b % 62];
  }
  out[n] = '\0';
  memset (pool, 0, sizeof pool);
}

char *
sk_id_new (const char *prefix)
{
  gsize plen = prefix ? strlen (prefix) : 0;
  char *id = g_malloc (plen + 16 + 1);

  memcpy (id, prefix, plen);
  fill_base62 (id + plen, 16);
  return id;
}

char *
sk_secret_new (guint n_bits)
{
  /* Characters needed so that n × log2(62) ≥ n_bits; log2(62) > 5.954, so 5954/1000 is a
   * safe lower bound in integers. */
  gsize n = ((gsize)MAX (n_bits, 1u) * 1000 + 5953) / 5954;
  char *secret = g_malloc (n + 1);

  fill_base62 (secret, n);
  return secret;
}

gboolean
sk_secure_equal (const char *a, const char *b)
{
  if (a == NULL || b == NULL)
    return FALSE;

  gsize la = strlen (a), lb = strlen (b);
  gsize n = MAX (la, lb);
  /* Walk the longer length whatever the content: the time depends on the lengths only, and a
   * length difference makes the result false without an early exit. */
  volatile guint8 diff = (la != lb);

  for (gsize i = 0; i < n; i++) {
    guint8 x = i < la ? (guint8)a[i] : 0;
    guint8 y = i < lb ? (guint8)b[i] : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

char *
sk_sha256_hex (const char *s)
{
  g_return_val_if_fail (s != NULL, NULL);
  return g_compute_checksum_for_string (G_CHECKSUM_SHA256, s, -1);
}
