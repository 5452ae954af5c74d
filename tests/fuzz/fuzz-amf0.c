/* libFuzzer target: the AMF0 decoder, and the encoder on whatever it decoded (a value
 * re-encoded and decoded again must encode to the same bytes). */
#include <stdlib.h>
#include <string.h>

#include "ingress/rtmp/sk-amf0.h"

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

static GByteArray *
encode (GPtrArray *values)
{
  GByteArray *out = g_byte_array_new ();
  for (guint i = 0; i < values->len; i++)
    sk_amf0_write_value (out, values->pdata[i]);
  return out;
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (GPtrArray) values = sk_amf0_decode_all (data, size, NULL);
  if (values == NULL)
    return 0;
  g_autoptr (GByteArray) once = encode (values);
  g_autoptr (GPtrArray) again = sk_amf0_decode_all (once->data, once->len, NULL);
  if (again == NULL)
    abort ();
  g_autoptr (GByteArray) twice = encode (again);
  if (once->len != twice->len
      || (once->len > 0 && memcmp (once->data, twice->data, once->len) != 0))
    abort ();
  return 0;
}
