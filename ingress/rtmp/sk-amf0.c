/* streamkeeper: AMF0 decoder and encoder (see sk-amf0.h). */
#include "sk-amf0.h"

#include <string.h>

G_DEFINE_QUARK (sk - rtmp - error - quark, sk_rtmp_error)

void
sk_amf0_value_free (SkAmf0Value *value)
{
  if (value == NULL)
    return;
  g_free (value->string);
  if (value->names != NULL)
    g_ptr_array_unref (value->names);
  if (value->items != NULL)
    g_ptr_array_unref (value->items);
  g_free (value);
}

static SkAmf0Value *
value_new (SkAmf0Type type)
{
  SkAmf0Value *value = g_new0 (SkAmf0Value, 1);
  value->type = type;
  return value;
}

SkAmf0Value *
sk_amf0_value_new_number (double number)
{
  SkAmf0Value *value = value_new (SK_AMF0_NUMBER);
  value->number = number;
  return value;
}

SkAmf0Value *
sk_amf0_value_new_boolean (gboolean boolean)
{
  SkAmf0Value *value = value_new (SK_AMF0_BOOLEAN);
  value->boolean = !!boolean;
  return value;
}

SkAmf0Value *
sk_amf0_value_new_string (const char *string)
{
  SkAmf0Value *value = value_new (SK_AMF0_STRING);
  value->string = g_strdup (string);
  value->string_len = strlen (string);
  if (value->string_len > G_MAXUINT16)
    value->type = SK_AMF0_LONG_STRING;
  return value;
}

SkAmf0Value *
sk_amf0_value_new_null (void)
{
  return value_new (SK_AMF0_NULL);
}

static void
value_init_container (SkAmf0Value *value)
{
  if (value->type != SK_AMF0_STRICT_ARRAY)
    value->names = g_ptr_array_new_with_free_func (g_free);
  value->items = g_ptr_array_new_with_free_func ((GDestroyNotify)sk_amf0_value_free);
}

SkAmf0Value *
sk_amf0_value_new_object (void)
{
  SkAmf0Value *value = value_new (SK_AMF0_OBJECT);
  value_init_container (value);
  return value;
}

void
sk_amf0_object_append (SkAmf0Value *object, const char *name, SkAmf0Value *value)
{
  g_return_if_fail (object->names != NULL);
  g_ptr_array_add (object->names, g_strdup (name));
  g_ptr_array_add (object->items, value);
}

const SkAmf0Value *
sk_amf0_object_get (const SkAmf0Value *object, const char *name)
{
  if (object == NULL || object->names == NULL)
    return NULL;
  for (guint i = 0; i < object->names->len; i++) {
    if (g_str_equal (g_ptr_array_index (object->names, i), name))
      return g_ptr_array_index (object->items, i);
  }
  return NULL;
}

const char *
sk_amf0_value_get_string (const SkAmf0Value *value)
{
  if (value == NULL || (value->type != SK_AMF0_STRING && value->type != SK_AMF0_LONG_STRING))
    return NULL;
  return value->string;
}

double
sk_amf0_value_get_number (const SkAmf0Value *value, double fallback)
{
  if (value == NULL || value->type != SK_AMF0_NUMBER)
    return fallback;
  return value->number;
}

/* ---- decoder ---- */

typedef struct {
  const guint8 *data;
  gsize size;
  gsize pos;
  guint n_values;
  GError **error;
} Reader;

static gboolean
fail (Reader *r, SkRtmpError code, const char *what)
{
  g_set_error (r->error, SK_RTMP_ERROR, code, "AMF0: %s at offset %" G_GSIZE_FORMAT, what, r->pos);
  return FALSE;
}

static gboolean
need (Reader *r, gsize n)
{
  if (r->size - r->pos < n)
    return fail (r, SK_RTMP_ERROR_PROTOCOL, "truncated value");
  return TRUE;
}

static guint32
read_be (Reader *r, guint n)
{
  guint32 v = 0;
  for (guint i = 0; i < n; i++)
    v = (v << 8) | r->data[r->pos++];
  return v;
}

static double
read_double (Reader *r)
{
  guint64 bits = 0;
  double d;
  for (guint i = 0; i < 8; i++)
    bits = (bits << 8) | r->data[r->pos++];
  memcpy (&d, &bits, sizeof d);
  return d;
}

/* A u16- or u32-prefixed UTF-8 string; the length is checked against the input first. */
static char *
read_string (Reader *r, guint len_bytes, gsize *len_out)
{
  if (!need (r, len_bytes))
    return NULL;
  gsize len = read_be (r, len_bytes);
  if (!need (r, len))
    return NULL;
  char *s = g_strndup ((const char *)r->data + r->pos, len);
  r->pos += len;
  if (len_out != NULL)
    *len_out = len;
  return s;
}

static SkAmf0Value *read_value (Reader *r, guint depth);

static gboolean
at_object_end (Reader *r)
{
  return r->size - r->pos >= 3 && r->data[r->pos] == 0 && r->data[r->pos + 1] == 0
         && r->data[r->pos + 2] == SK_AMF0_OBJECT_END;
}

/* Properties until the 00 00 09 marker. @hint (ECMA count) lets a missing end marker at the very
 * end of the input pass, as some encoders write it that way. */
static gboolean
read_properties (Reader *r, SkAmf0Value *object, guint depth, gint64 hint)
{
  for (;;) {
    if (at_object_end (r)) {
      r->pos += 3;
      return TRUE;
    }
    if (r->pos == r->size && hint >= 0 && object->items->len >= hint)
      return TRUE;
    char *name = read_string (r, 2, NULL);
    if (name == NULL)
      return FALSE;
    SkAmf0Value *child = read_value (r, depth + 1);
    if (child == NULL) {
      g_free (name);
      return FALSE;
    }
    g_ptr_array_add (object->names, name);
    g_ptr_array_add (object->items, child);
  }
}

static SkAmf0Value *
read_value (Reader *r, guint depth)
{
  if (depth > SK_AMF0_MAX_DEPTH) {
    fail (r, SK_RTMP_ERROR_LIMIT, "nesting too deep");
    return NULL;
  }
  if (++r->n_values > SK_AMF0_MAX_VALUES) {
    fail (r, SK_RTMP_ERROR_LIMIT, "too many values");
    return NULL;
  }
  if (!need (r, 1))
    return NULL;

  guint8 marker = r->data[r->pos++];
  g_autoptr (SkAmf0Value) value = value_new (marker);

  switch (marker) {
    case SK_AMF0_NUMBER:
      if (!need (r, 8))
        return NULL;
      value->number = read_double (r);
      break;
    case SK_AMF0_BOOLEAN:
      if (!need (r, 1))
        return NULL;
      value->boolean = r->data[r->pos++] != 0;
      break;
    case SK_AMF0_STRING:
    case SK_AMF0_LONG_STRING:
      value->string = read_string (r, marker == SK_AMF0_STRING ? 2 : 4, &value->string_len);
      if (value->string == NULL)
        return NULL;
      break;
    case SK_AMF0_NULL:
    case SK_AMF0_UNDEFINED:
      break;
    case SK_AMF0_OBJECT:
      value_init_container (value);
      if (!read_properties (r, value, depth, -1))
        return NULL;
      break;
    case SK_AMF0_ECMA_ARRAY: {
      if (!need (r, 4))
        return NULL;
      guint32 hint = read_be (r, 4);
      value_init_container (value);
      if (!read_properties (r, value, depth, hint))
        return NULL;
      break;
    }
    case SK_AMF0_STRICT_ARRAY: {
      if (!need (r, 4))
        return NULL;
      guint32 count = read_be (r, 4);
      /* Every element takes at least one byte: refuse a count the input cannot hold. */
      if (count > r->size - r->pos) {
        fail (r, SK_RTMP_ERROR_PROTOCOL, "strict array count exceeds input");
        return NULL;
      }
      value_init_container (value);
      for (guint32 i = 0; i < count; i++) {
        SkAmf0Value *child = read_value (r, depth + 1);
        if (child == NULL)
          return NULL;
        g_ptr_array_add (value->items, child);
      }
      break;
    }
    case SK_AMF0_DATE:
      if (!need (r, 10))
        return NULL;
      value->number = read_double (r);
      value->timezone = (gint16)read_be (r, 2);
      break;
    default:
      r->pos--;
      fail (r, SK_RTMP_ERROR_PROTOCOL, "unsupported type marker");
      return NULL;
  }
  return g_steal_pointer (&value);
}

SkAmf0Value *
sk_amf0_decode (const guint8 *data, gsize size, gsize *consumed, GError **error)
{
  Reader r = { data, size, 0, 0, error };
  SkAmf0Value *value = read_value (&r, 0);
  if (value != NULL && consumed != NULL)
    *consumed = r.pos;
  return value;
}

GPtrArray *
sk_amf0_decode_all (const guint8 *data, gsize size, GError **error)
{
  g_autoptr (GPtrArray) values
      = g_ptr_array_new_with_free_func ((GDestroyNotify)sk_amf0_value_free);
  Reader r = { data, size, 0, 0, error };
  while (r.pos < r.size) {
    SkAmf0Value *value = read_value (&r, 0);
    if (value == NULL)
      return NULL;
    g_ptr_array_add (values, value);
  }
  return g_steal_pointer (&values);
}

/* ---- encoder ---- */

static void
write_be (GByteArray *out, guint32 v, guint n)
{
  guint8 buf[4];
  for (guint i = 0; i < n; i++)
    buf[i] = (guint8)(v >> (8 * (n - 1 - i)));
  g_byte_array_append (out, buf, n);
}

static void
write_double (GByteArray *out, double d)
{
  guint64 bits;
  guint8 buf[8];
  memcpy (&bits, &d, sizeof bits);
  for (guint i = 0; i < 8; i++)
    buf[i] = (guint8)(bits >> (56 - 8 * i));
  g_byte_array_append (out, buf, 8);
}

static void
write_marker (GByteArray *out, SkAmf0Type type)
{
  guint8 m = type;
  g_byte_array_append (out, &m, 1);
}

void
sk_amf0_write_number (GByteArray *out, double number)
{
  write_marker (out, SK_AMF0_NUMBER);
  write_double (out, number);
}

void
sk_amf0_write_boolean (GByteArray *out, gboolean boolean)
{
  guint8 b = !!boolean;
  write_marker (out, SK_AMF0_BOOLEAN);
  g_byte_array_append (out, &b, 1);
}

static void
write_string_len (GByteArray *out, const char *string, gsize len)
{
  if (len > G_MAXUINT16) {
    write_marker (out, SK_AMF0_LONG_STRING);
    write_be (out, (guint32)len, 4);
  } else {
    write_marker (out, SK_AMF0_STRING);
    write_be (out, (guint32)len, 2);
  }
  g_byte_array_append (out, (const guint8 *)string, len);
}

void
sk_amf0_write_string (GByteArray *out, const char *string)
{
  write_string_len (out, string, strlen (string));
}

void
sk_amf0_write_null (GByteArray *out)
{
  write_marker (out, SK_AMF0_NULL);
}

static void
write_properties (GByteArray *out, const SkAmf0Value *value)
{
  for (guint i = 0; i < value->items->len; i++) {
    const char *name = g_ptr_array_index (value->names, i);
    gsize len = MIN (strlen (name), G_MAXUINT16);
    write_be (out, (guint32)len, 2);
    g_byte_array_append (out, (const guint8 *)name, len);
    sk_amf0_write_value (out, g_ptr_array_index (value->items, i));
  }
  write_be (out, 0, 2);
  write_marker (out, SK_AMF0_OBJECT_END);
}

void
sk_amf0_write_value (GByteArray *out, const SkAmf0Value *value)
{
  switch (value->type) {
    case SK_AMF0_NUMBER:
      sk_amf0_write_number (out, value->number);
      break;
    case SK_AMF0_BOOLEAN:
      sk_amf0_write_boolean (out, value->boolean);
      break;
    case SK_AMF0_STRING:
    case SK_AMF0_LONG_STRING:
      write_string_len (out, value->string, value->string_len);
      break;
    case SK_AMF0_OBJECT:
      write_marker (out, SK_AMF0_OBJECT);
      write_properties (out, value);
      break;
    case SK_AMF0_ECMA_ARRAY:
      write_marker (out, SK_AMF0_ECMA_ARRAY);
      write_be (out, value->items->len, 4);
      write_properties (out, value);
      break;
    case SK_AMF0_STRICT_ARRAY:
      write_marker (out, SK_AMF0_STRICT_ARRAY);
      write_be (out, value->items->len, 4);
      for (guint i = 0; i < value->items->len; i++)
        sk_amf0_write_value (out, g_ptr_array_index (value->items, i));
      break;
    case SK_AMF0_DATE:
      write_marker (out, SK_AMF0_DATE);
      write_double (out, value->number);
      write_be (out, (guint16)value->timezone, 2);
      break;
    case SK_AMF0_UNDEFINED:
      write_marker (out, SK_AMF0_UNDEFINED);
      break;
    case SK_AMF0_NULL:
    case SK_AMF0_OBJECT_END:
    default:
      sk_amf0_write_null (out);
      break;
  }
}
