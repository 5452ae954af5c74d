/*
 * streamkeeper: AMF0 values (the encoding of RTMP commands and script data).
 *
 * The decoder reads untrusted bytes: it never reads past @size, limits nesting depth and the
 * number of values one call may build, and never sizes an allocation from a length field
 * before the bytes it announces are present.
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define SK_RTMP_ERROR (sk_rtmp_error_quark ())
GQuark sk_rtmp_error_quark (void);

typedef enum {
  SK_RTMP_ERROR_PROTOCOL, /* malformed or forbidden input: close the connection */
  SK_RTMP_ERROR_LIMIT,    /* a configured limit was exceeded: close the connection */
  SK_RTMP_ERROR_BAD_NAME, /* publish refused: unknown or busy stream key */
  SK_RTMP_ERROR_REJECTED, /* publish refused: node full, draining */
  SK_RTMP_ERROR_PENDING,  /* publish neither accepted nor refused yet: answered later */
} SkRtmpError;

/* Deepest object/array nesting the decoder accepts; real commands use 2 or 3. */
#define SK_AMF0_MAX_DEPTH 32
/* Values one decode call may create; a connect command has a few dozen. */
#define SK_AMF0_MAX_VALUES 4096

typedef enum {
  SK_AMF0_NUMBER = 0x00,
  SK_AMF0_BOOLEAN = 0x01,
  SK_AMF0_STRING = 0x02,
  SK_AMF0_OBJECT = 0x03,
  SK_AMF0_NULL = 0x05,
  SK_AMF0_UNDEFINED = 0x06,
  SK_AMF0_ECMA_ARRAY = 0x08,
  SK_AMF0_OBJECT_END = 0x09,
  SK_AMF0_STRICT_ARRAY = 0x0a,
  SK_AMF0_DATE = 0x0b,
  SK_AMF0_LONG_STRING = 0x0c,
} SkAmf0Type;

typedef struct _SkAmf0Value SkAmf0Value;

struct _SkAmf0Value {
  SkAmf0Type type;
  double number;    /* NUMBER, DATE (ms since epoch) */
  gboolean boolean; /* BOOLEAN */
  gint16 timezone;  /* DATE (ignored by everyone, kept for round trips) */
  char *string;     /* STRING, LONG_STRING: NUL-terminated copy */
  gsize string_len; /* may be shorter than strlen if the peer embedded a NUL */
  GPtrArray *names; /* OBJECT, ECMA_ARRAY: property names (char *) */
  GPtrArray *items; /* OBJECT, ECMA_ARRAY: values, parallel to names; STRICT_ARRAY: elements */
};

void sk_amf0_value_free (SkAmf0Value *value);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkAmf0Value, sk_amf0_value_free)

SkAmf0Value *sk_amf0_value_new_number (double number);
SkAmf0Value *sk_amf0_value_new_boolean (gboolean boolean);
SkAmf0Value *sk_amf0_value_new_string (const char *string);
SkAmf0Value *sk_amf0_value_new_null (void);
SkAmf0Value *sk_amf0_value_new_object (void);
/* Appends @name → @value (taken) to an OBJECT or ECMA_ARRAY. */
void sk_amf0_object_append (SkAmf0Value *object, const char *name, SkAmf0Value *value);

/* Property lookup on OBJECT/ECMA_ARRAY; NULL if absent or @value is not an object. */
const SkAmf0Value *sk_amf0_object_get (const SkAmf0Value *object, const char *name);
/* The string of a STRING/LONG_STRING value, else NULL (safe on NULL). */
const char *sk_amf0_value_get_string (const SkAmf0Value *value);
/* The number of a NUMBER value, else @fallback (safe on NULL). */
double sk_amf0_value_get_number (const SkAmf0Value *value, double fallback);

/*
 * Decodes one value from @data. On success stores the bytes it used in *@consumed.
 * Truncated or malformed input, too deep nesting or too many values: NULL + SK_RTMP_ERROR.
 */
SkAmf0Value *sk_amf0_decode (const guint8 *data, gsize size, gsize *consumed, GError **error);

/* Decodes values back to back until @size is used up (a command message body). */
GPtrArray *sk_amf0_decode_all (const guint8 *data, gsize size, GError **error);

/* Encoders: append the AMF0 form to @out. Strings longer than 65535 bytes become LONG_STRING. */
void sk_amf0_write_number (GByteArray *out, double number);
void sk_amf0_write_boolean (GByteArray *out, gboolean boolean);
void sk_amf0_write_string (GByteArray *out, const char *string);
void sk_amf0_write_null (GByteArray *out);
void sk_amf0_write_value (GByteArray *out, const SkAmf0Value *value);

G_END_DECLS
