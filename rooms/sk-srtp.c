/*
 * streamkeeper: SRTP (RFC 3711) for the RTP we send and receive.
 *
 * Every WHEP viewer has its own SRTP session, so every packet the node sends is encrypted and
 * authenticated once per viewer, and every packet a WHIP publisher sends is checked and
 * decrypted once. Debian's libsrtp2 is built on NSS and creates and destroys a PKCS#11 context
 * for each packet: about 40 % of webrtcbin's send path and a third of its receive path went
 * there. This file does AES_CM_128_HMAC_SHA1_80/32 with libcrypto (AES-NI, one cipher and one
 * MAC context per session) and hooks it into webrtcbin's srtpenc and srtpdec, which keep RTCP
 * and any other profile.
 */
#include "rooms/sk-srtp.h"

#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "common/sk-common.h"

GST_DEBUG_CATEGORY_STATIC (sk_srtp_debug);
#define GST_CAT_DEFAULT sk_srtp_debug

#define RTP_HEADER_LEN 12
#define SEQ_MEDIAN 32768  /* half of the 16-bit sequence number space */
#define REPLAY_WINDOW 128 /* packets, as libsrtp's and srtpdec's default */

/* RFC 3711 4.3.1 key derivation labels */
enum { LABEL_RTP_ENCRYPTION = 0x00, LABEL_RTP_AUTH = 0x01, LABEL_RTP_SALT = 0x02 };
#define SESSION_AUTH_KEY_LEN 20

/* One direction's session keys (RFC 3711 4.3), ready to use. */
typedef struct {
  EVP_CIPHER_CTX *cipher; /* AES-128-CTR with the session encryption key */
  EVP_MAC_CTX *mac;       /* HMAC-SHA1 with the session authentication key */
  guint8 salt[SK_SRTP_MASTER_SALT_LEN];
  guint tag_len;
} SessionKeys;

struct _SkSrtpSender {
  SessionKeys keys;
  GHashTable *index_of_ssrc; /* SSRC → highest packet index sent (48 bits), boxed guint64 */
};

/* What a receiver knows of one SSRC: its highest index and which of the REPLAY_WINDOW
 * indices up to it arrived (bit i of seen: highest - i). */
typedef struct {
  guint32 ssrc;
  guint64 highest;
  guint64 seen[REPLAY_WINDOW / 64];
} ReceivedStream;

struct _SkSrtpReceiver {
  SessionKeys keys;
  ReceivedStream streams[SK_SRTP_MAX_SSRCS];
  guint n_streams;
};

static void
ensure_debug_category (void)
{
  static gsize debug_init;
  if (g_once_init_enter (&debug_init)) {
    GST_DEBUG_CATEGORY_INIT (sk_srtp_debug, "sk-srtp", 0, "streamkeeper SRTP");
    g_once_init_leave (&debug_init, 1);
  }
}

/* Byte by byte: packets sit at any address (GST_READ_* may load unaligned words). */
static guint16
read_be16 (const guint8 *p)
{
  return (guint16)(p[0] << 8 | p[1]);
}

static guint32
read_be32 (const guint8 *p)
{
  return (guint32)p[0] << 24 | (guint32)p[1] << 16 | (guint32)p[2] << 8 | p[3];
}

/* AES-CM keystream (RFC 3711 4.1.1) under @key from the 14-byte @iv, into @out. */
static gboolean
aes_cm_keystream (const guint8 *key, const guint8 *iv, guint8 *out, int len)
{
  guint8 block[16] = { 0 };
  memcpy (block, iv, SK_SRTP_MASTER_SALT_LEN);
  memset (out, 0, len);
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new ();
  int n = 0;
  gboolean ok = ctx != NULL && EVP_EncryptInit_ex (ctx, EVP_aes_128_ctr (), NULL, key, block) == 1
                && EVP_EncryptUpdate (ctx, out, &n, out, len) == 1 && n == len;
  EVP_CIPHER_CTX_free (ctx);
  return ok;
}

/* RFC 3711 4.3.1 with a key derivation rate of 0: the session key for @label. */
static gboolean
derive (const guint8 *master_key, const guint8 *master_salt, guint8 label, guint8 *out, int len)
{
  guint8 x[SK_SRTP_MASTER_SALT_LEN];
  memcpy (x, master_salt, sizeof x);
  x[7] ^= label; /* key_id = label || r (48 bits, 0), right-aligned on the 112-bit salt */
  return aes_cm_keystream (master_key, x, out, len);
}

static void
session_keys_clear (SessionKeys *k)
{
  g_clear_pointer (&k->cipher, EVP_CIPHER_CTX_free);
  g_clear_pointer (&k->mac, EVP_MAC_CTX_free);
  OPENSSL_cleanse (k->salt, sizeof k->salt);
}

static gboolean
session_keys_init (SessionKeys *k, const guint8 *master, gsize master_len, guint tag_len,
                   GError **error)
{
  if (master_len != SK_SRTP_MASTER_KEY_LEN + SK_SRTP_MASTER_SALT_LEN
      || (tag_len != 10 && tag_len != 4)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                 "SRTP AES_CM_128_HMAC_SHA1 needs a 30-byte master key and salt and a tag of 10 "
                 "or 4 bytes, not %" G_GSIZE_FORMAT " bytes and %u",
                 master_len, tag_len);
    return FALSE;
  }

  const guint8 *master_key = master, *master_salt = master + SK_SRTP_MASTER_KEY_LEN;
  guint8 enc_key[SK_SRTP_MASTER_KEY_LEN], auth_key[SESSION_AUTH_KEY_LEN];
  k->tag_len = tag_len;
  gboolean ok = derive (master_key, master_salt, LABEL_RTP_ENCRYPTION, enc_key, sizeof enc_key)
                && derive (master_key, master_salt, LABEL_RTP_AUTH, auth_key, sizeof auth_key)
                && derive (master_key, master_salt, LABEL_RTP_SALT, k->salt, sizeof k->salt);

  k->cipher = EVP_CIPHER_CTX_new ();
  ok = ok && k->cipher != NULL
       && EVP_EncryptInit_ex (k->cipher, EVP_aes_128_ctr (), NULL, enc_key, NULL) == 1;

  EVP_MAC *hmac = EVP_MAC_fetch (NULL, OSSL_MAC_NAME_HMAC, NULL);
  k->mac = hmac != NULL ? EVP_MAC_CTX_new (hmac) : NULL;
  EVP_MAC_free (hmac);
  OSSL_PARAM params[] = {
    OSSL_PARAM_construct_utf8_string (OSSL_MAC_PARAM_DIGEST, (char *)"SHA1", 0),
    OSSL_PARAM_construct_end (),
  };
  ok = ok && k->mac != NULL && EVP_MAC_init (k->mac, auth_key, sizeof auth_key, params) == 1;

  OPENSSL_cleanse (enc_key, sizeof enc_key);
  OPENSSL_cleanse (auth_key, sizeof auth_key);
  if (!ok) {
    session_keys_clear (k);
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL,
                 "libcrypto has no AES-128-CTR or HMAC-SHA1 for SRTP");
  }
  return ok;
}

/* En- or decrypts @data in place: IV = (salt * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16). */
static gboolean
session_keys_crypt (SessionKeys *k, guint32 ssrc, guint64 index, guint8 *data, gsize len)
{
  guint8 iv[16] = { 0 };
  memcpy (iv, k->salt, sizeof k->salt);
  for (int i = 0; i < 4; i++)
    iv[4 + i] ^= (guint8)(ssrc >> (24 - 8 * i));
  for (int i = 0; i < 6; i++)
    iv[8 + i] ^= (guint8)(index >> (40 - 8 * i));

  int n = 0;
  return EVP_EncryptInit_ex (k->cipher, NULL, NULL, NULL, iv) == 1
         && EVP_EncryptUpdate (k->cipher, data, &n, data, (int)len) == 1 && n == (int)len;
}

/* tag = HMAC-SHA1 (@data || ROC), truncated to tag_len bytes, into @tag. */
static gboolean
session_keys_tag (SessionKeys *k, const guint8 *data, gsize len, guint32 roc, guint8 *tag)
{
  guint8 roc_be[4] = { roc >> 24, roc >> 16, roc >> 8, roc }, digest[EVP_MAX_MD_SIZE];
  size_t digest_len = 0;
  if (EVP_MAC_init (k->mac, NULL, 0, NULL) != 1 || EVP_MAC_update (k->mac, data, len) != 1
      || EVP_MAC_update (k->mac, roc_be, sizeof roc_be) != 1
      || EVP_MAC_final (k->mac, digest, &digest_len, sizeof digest) != 1 || digest_len < k->tag_len)
    return FALSE;
  memcpy (tag, digest, k->tag_len);
  return TRUE;
}

/* The length of @packet's RTP header (CSRCs and extension included), or 0 if @packet is not
 * RTP version 2 or its header runs past @len. */
static gsize
rtp_header_len (const guint8 *packet, gsize len)
{
  if (len < RTP_HEADER_LEN || (packet[0] >> 6) != 2)
    return 0;
  gsize header_len = RTP_HEADER_LEN + 4 * (packet[0] & 0x0f);
  if (packet[0] & 0x10) { /* header extension: 4 bytes, then its length in 32-bit words */
    if (header_len + 4 > len)
      return 0;
    header_len += 4 + 4 * (gsize)read_be16 (packet + header_len + 2);
  }
  return header_len <= len ? header_len : 0;
}

/* The packet index (RFC 3711 3.3.1) of @seq from an SSRC whose highest index so far is
 * @highest. As in libsrtp, the rollover counter never goes below 0: a stream whose first
 * packets are late or start high in the sequence space stays at ROC 0. */
static guint64
estimate_index (guint64 highest, guint16 seq)
{
  guint32 roc = (guint32)(highest >> 16);
  guint16 s_l = (guint16)highest;
  if (s_l < SEQ_MEDIAN) {
    if (seq - s_l > SEQ_MEDIAN && roc > 0)
      roc--;
  } else if (s_l - SEQ_MEDIAN > seq) {
    roc++;
  }
  return ((guint64)roc << 16) | seq;
}

SkSrtpSender *
sk_srtp_sender_new (const guint8 *master, gsize master_len, guint tag_len, GError **error)
{
  g_return_val_if_fail (master != NULL, NULL);

  g_autofree SkSrtpSender *self = g_new0 (SkSrtpSender, 1);
  if (!session_keys_init (&self->keys, master, master_len, tag_len, error))
    return NULL;
  self->index_of_ssrc = g_hash_table_new_full (NULL, NULL, NULL, g_free);
  return g_steal_pointer (&self);
}

void
sk_srtp_sender_free (SkSrtpSender *self)
{
  if (self == NULL)
    return;
  session_keys_clear (&self->keys);
  g_hash_table_unref (self->index_of_ssrc);
  g_free (self);
}

guint
sk_srtp_sender_get_tag_len (const SkSrtpSender *self)
{
  return self->keys.tag_len;
}

gsize
sk_srtp_sender_protect (SkSrtpSender *self, guint8 *packet, gsize len, gsize size)
{
  g_return_val_if_fail (self != NULL && packet != NULL, 0);

  gsize header_len = rtp_header_len (packet, len);
  if (header_len == 0 || size < len || size - len < self->keys.tag_len || len > G_MAXINT)
    return 0;

  guint16 seq = read_be16 (packet + 2);
  guint32 ssrc = read_be32 (packet + 8);
  guint64 *highest = g_hash_table_lookup (self->index_of_ssrc, GUINT_TO_POINTER (ssrc));
  guint64 index = highest != NULL ? estimate_index (*highest, seq) : seq;
  if (highest == NULL) {
    highest = g_new (guint64, 1);
    *highest = index;
    g_hash_table_insert (self->index_of_ssrc, GUINT_TO_POINTER (ssrc), highest);
  } else if (index > *highest) {
    *highest = index;
  }

  if (!session_keys_crypt (&self->keys, ssrc, index, packet + header_len, len - header_len)
      || !session_keys_tag (&self->keys, packet, len, (guint32)(index >> 16), packet + len))
    return 0;
  return len + self->keys.tag_len;
}

SkSrtpReceiver *
sk_srtp_receiver_new (const guint8 *master, gsize master_len, guint tag_len, GError **error)
{
  g_return_val_if_fail (master != NULL, NULL);

  g_autofree SkSrtpReceiver *self = g_new0 (SkSrtpReceiver, 1);
  if (!session_keys_init (&self->keys, master, master_len, tag_len, error))
    return NULL;
  return g_steal_pointer (&self);
}

void
sk_srtp_receiver_free (SkSrtpReceiver *self)
{
  if (self == NULL)
    return;
  session_keys_clear (&self->keys);
  g_free (self);
}

const char *
sk_srtp_status_to_string (SkSrtpStatus status)
{
  switch (status) {
    case SK_SRTP_OK:
      return "ok";
    case SK_SRTP_MALFORMED:
      return "not an SRTP packet";
    case SK_SRTP_AUTH_FAILED:
      return "authentication failed";
    case SK_SRTP_REPLAYED:
      return "replayed or too old";
    case SK_SRTP_TOO_MANY_SSRCS:
      return "too many SSRCs";
  }
  return "unknown";
}

/* Whether bit @i (index highest - i) of @seen is set. */
static gboolean
window_has (const guint64 *seen, guint i)
{
  return (seen[i / 64] >> (i % 64)) & 1;
}

/* Records @index in @s's window, moving the window when @index is the new highest. */
static void
window_add (ReceivedStream *s, guint64 index)
{
  if (index > s->highest) {
    guint64 d = index - s->highest;
    if (d >= REPLAY_WINDOW) {
      s->seen[0] = s->seen[1] = 0;
    } else if (d >= 64) {
      s->seen[1] = s->seen[0] << (d - 64);
      s->seen[0] = 0;
    } else {
      s->seen[1] = (s->seen[1] << d) | (s->seen[0] >> (64 - d));
      s->seen[0] <<= d;
    }
    s->highest = index;
    s->seen[0] |= 1;
  } else {
    guint i = (guint)(s->highest - index);
    s->seen[i / 64] |= G_GUINT64_CONSTANT (1) << (i % 64);
  }
}

SkSrtpStatus
sk_srtp_receiver_unprotect (SkSrtpReceiver *self, guint8 *packet, gsize len, gsize *out_len)
{
  g_return_val_if_fail (self != NULL && packet != NULL && out_len != NULL, SK_SRTP_MALFORMED);

  guint tag_len = self->keys.tag_len;
  if (len < tag_len || len > G_MAXINT)
    return SK_SRTP_MALFORMED;
  gsize auth_len = len - tag_len, header_len = rtp_header_len (packet, auth_len);
  if (header_len == 0)
    return SK_SRTP_MALFORMED;

  guint16 seq = read_be16 (packet + 2);
  guint32 ssrc = read_be32 (packet + 8);
  ReceivedStream *s = NULL;
  for (guint i = 0; i < self->n_streams && s == NULL; i++)
    if (self->streams[i].ssrc == ssrc)
      s = &self->streams[i];
  guint64 index = s != NULL ? estimate_index (s->highest, seq) : seq;
  if (s != NULL && index <= s->highest
      && (s->highest - index >= REPLAY_WINDOW || window_has (s->seen, s->highest - index)))
    return SK_SRTP_REPLAYED;

  guint8 tag[SK_SRTP_MAX_TAG_LEN];
  if (!session_keys_tag (&self->keys, packet, auth_len, (guint32)(index >> 16), tag)
      || CRYPTO_memcmp (tag, packet + auth_len, tag_len) != 0)
    return SK_SRTP_AUTH_FAILED;
  /* Only an authentic packet opens a stream: nobody without the key can fill the table. */
  if (s == NULL && self->n_streams == SK_SRTP_MAX_SSRCS)
    return SK_SRTP_TOO_MANY_SSRCS;
  if (!session_keys_crypt (&self->keys, ssrc, index, packet + header_len, auth_len - header_len))
    return SK_SRTP_MALFORMED; /* libcrypto failing on valid input: nothing to pass on */
  if (s == NULL) {
    s = &self->streams[self->n_streams++];
    s->ssrc = ssrc;
    s->highest = index;
    s->seen[0] = 1;
    s->seen[1] = 0;
  } else {
    window_add (s, index);
  }
  *out_len = auth_len;
  return SK_SRTP_OK;
}

/* --- webrtcbin's srtpenc and srtpdec ---------------------------------------------------- */

/* Lives on the srtpenc or srtpdec; its probes and key handler hold references. */
typedef struct {
  gint ref_count;
  GMutex lock;
  GstElement *element;      /* not owned: used only while data flows through it */
  gboolean sends;           /* srtpenc (a sender) or srtpdec (a receiver) */
  SkSrtpSender *sender;     /* srtpenc: NULL until DTLS keys arrive (or for other profiles) */
  SkSrtpReceiver *receiver; /* srtpdec: the same */
  /* srtpdec: packets dropped, by SkSrtpStatus, and when we last said so */
  guint64 dropped[SK_SRTP_TOO_MANY_SSRCS + 1];
  gint64 last_drop_log_us;
} Takeover;

static void takeover_unref (gpointer data);

static Takeover *
takeover_new (GstElement *element, gboolean sends)
{
  Takeover *t = g_new0 (Takeover, 1);
  t->ref_count = 1;
  g_mutex_init (&t->lock);
  t->element = element;
  t->sends = sends;
  g_object_set_data_full (G_OBJECT (element), "sk-srtp-takeover", t, takeover_unref);
  return t;
}

static Takeover *
takeover_ref (Takeover *t)
{
  g_atomic_int_inc (&t->ref_count);
  return t;
}

static void
takeover_unref (gpointer data)
{
  Takeover *t = data;
  if (!g_atomic_int_dec_and_test (&t->ref_count))
    return;
  sk_srtp_sender_free (t->sender);
  sk_srtp_receiver_free (t->receiver);
  g_mutex_clear (&t->lock);
  g_free (t);
}

static void
takeover_closure_unref (gpointer data, GClosure *closure)
{
  takeover_unref (data);
}

/* The parent of @element if it was made by @factory_name, else NULL. */
static GstElement *
parent_made_by (GstElement *element, const char *factory_name)
{
  g_autoptr (GstObject) parent = gst_object_get_parent (GST_OBJECT (element));
  GstElementFactory *factory = parent != NULL && GST_IS_ELEMENT (parent)
                                   ? gst_element_get_factory (GST_ELEMENT (parent))
                                   : NULL;
  if (factory == NULL || !g_str_equal (GST_OBJECT_NAME (factory), factory_name))
    return NULL;
  return GST_ELEMENT (g_steal_pointer (&parent));
}

/* "hmac-sha1-80" → 10, "hmac-sha1-32" → 4, anything else 0 */
static guint
tag_len_of_auth (const char *auth)
{
  return g_strcmp0 (auth, "hmac-sha1-80") == 0 ? 10 : g_strcmp0 (auth, "hmac-sha1-32") == 0 ? 4 : 0;
}

/* DTLS has keyed the element (DTLS thread): from now on its RTP is ours if the profile is one
 * sk-srtp.c implements; anything else stays with libsrtp. */
static void
takeover_set_key (Takeover *t, GstBuffer *key, gboolean has_mki, const char *cipher,
                  const char *auth)
{
  const char *element = t->sends ? "srtpenc" : "srtpdec";
  guint tag_len = tag_len_of_auth (auth);
  if (key == NULL || has_mki || g_strcmp0 (cipher, "aes-128-icm") != 0 || tag_len == 0) {
    GST_INFO_OBJECT (t->element, "leaving %s/%s%s to %s", cipher, auth,
                     has_mki ? " with an MKI" : "", element);
    return;
  }

  GstMapInfo map;
  if (!gst_buffer_map (key, &map, GST_MAP_READ)) {
    GST_WARNING_OBJECT (t->element, "leaving SRTP to %s: cannot read the key", element);
    return;
  }
  g_autoptr (GError) error = NULL;
  SkSrtpSender *sender = NULL;
  SkSrtpReceiver *receiver = NULL;
  if (t->sends)
    sender = sk_srtp_sender_new (map.data, map.size, tag_len, &error);
  else
    receiver = sk_srtp_receiver_new (map.data, map.size, tag_len, &error);
  gst_buffer_unmap (key, &map);
  if (error != NULL) {
    GST_WARNING_OBJECT (t->element, "leaving SRTP to %s: %s", element, error->message);
    return;
  }

  g_mutex_lock (&t->lock);
  if (t->sends) {
    sk_srtp_sender_free (t->sender);
    t->sender = sender;
  } else {
    sk_srtp_receiver_free (t->receiver);
    t->receiver = receiver;
  }
  g_mutex_unlock (&t->lock);
  GST_INFO_OBJECT (t->element, "%s RTP with libcrypto (%s/%s)",
                   t->sends ? "protecting" : "checking and decrypting", cipher, auth);
}

/* --- srtpenc --- */

static const char *
enum_nick (GObject *object, const char *property)
{
  GParamSpec *pspec = g_object_class_find_property (G_OBJECT_GET_CLASS (object), property);
  if (pspec == NULL || !G_IS_PARAM_SPEC_ENUM (pspec))
    return NULL;
  gint value = 0;
  g_object_get (object, property, &value, NULL);
  GEnumValue *ev = g_enum_get_value (G_PARAM_SPEC_ENUM (pspec)->enum_class, value);
  return ev != NULL ? ev->value_nick : NULL;
}

/* dtlssrtpenc's "on-key-set": srtpenc now has DTLS's keys and profile (DTLS thread). */
static void
enc_on_key_set (GstElement *dtlssrtpenc, gpointer user_data)
{
  Takeover *t = user_data;
  g_autoptr (GstBuffer) key = NULL, mki = NULL;
  g_object_get (t->element, "key", &key, "mki", &mki, NULL);
  takeover_set_key (t, key, mki != NULL, enum_nick (G_OBJECT (t->element), "rtp-cipher"),
                    enum_nick (G_OBJECT (t->element), "rtp-auth"));
}

/* One rtp_sink_%u of srtpenc and its rtp_src_%u. */
typedef struct {
  Takeover *t;
  GstPad *src; /* looked up with the first packet we protect */
  char *src_name;
} EncPad;

static void
enc_pad_free (gpointer data)
{
  EncPad *ep = data;
  takeover_unref (ep->t);
  gst_clear_object (&ep->src);
  g_free (ep->src_name);
  g_free (ep);
}

/* A copy of @in, protected; NULL if it is not RTP we can protect. Under the take-over's lock. */
static GstBuffer *
protect_buffer (SkSrtpSender *sender, GstBuffer *in)
{
  gsize len = gst_buffer_get_size (in), size = len + sk_srtp_sender_get_tag_len (sender);
  GstBuffer *out = gst_buffer_new_allocate (NULL, size, NULL);
  GstMapInfo map;
  if (out == NULL || !gst_buffer_map (out, &map, GST_MAP_WRITE)) {
    gst_clear_buffer (&out);
    return NULL;
  }
  /* extract, not map: a payloader's packet is a header and a slice of the frame, and mapping
   * it would merge the two into a copy we would then copy again */
  gst_buffer_extract (in, 0, map.data, len);
  gsize protected_len = sk_srtp_sender_protect (sender, map.data, len, size);
  gst_buffer_unmap (out, &map);
  if (protected_len == 0) {
    gst_buffer_unref (out);
    return NULL;
  }
  gst_buffer_copy_into (out, in, GST_BUFFER_COPY_METADATA, 0, -1);
  return out;
}

static GstPadProbeReturn
enc_probe (GstPad *pad, GstPadProbeInfo *info, gpointer user_data)
{
  EncPad *ep = user_data;
  Takeover *t = ep->t;

  g_mutex_lock (&t->lock);
  if (t->sender == NULL) {
    g_mutex_unlock (&t->lock);
    return GST_PAD_PROBE_OK;
  }
  GstBufferList *out_list = NULL;
  GstBuffer *out = NULL;
  guint dropped = 0;
  if (info->type & GST_PAD_PROBE_TYPE_BUFFER_LIST) {
    GstBufferList *in = GST_PAD_PROBE_INFO_BUFFER_LIST (info);
    guint n = gst_buffer_list_length (in);
    out_list = gst_buffer_list_new_sized (n);
    for (guint i = 0; i < n; i++) {
      GstBuffer *b = protect_buffer (t->sender, gst_buffer_list_get (in, i));
      if (b != NULL)
        gst_buffer_list_insert (out_list, -1, b);
      else
        dropped++;
    }
  } else {
    out = protect_buffer (t->sender, GST_PAD_PROBE_INFO_BUFFER (info));
    dropped = out == NULL;
  }
  g_mutex_unlock (&t->lock);

  if (dropped > 0)
    GST_WARNING_OBJECT (pad, "dropped %u packets that are not RTP", dropped);
  gst_mini_object_unref (GST_PAD_PROBE_INFO_DATA (info));
  info->data = NULL;

  if (ep->src == NULL)
    ep->src = gst_element_get_static_pad (t->element, ep->src_name);
  GstFlowReturn ret = GST_FLOW_OK;
  if (ep->src == NULL) {
    ret = GST_FLOW_NOT_LINKED;
  } else if (out_list != NULL && gst_buffer_list_length (out_list) > 0) {
    ret = gst_pad_push_list (ep->src, g_steal_pointer (&out_list));
  } else if (out != NULL) {
    ret = gst_pad_push (ep->src, g_steal_pointer (&out));
  }
  if (out_list != NULL)
    gst_buffer_list_unref (out_list);
  if (out != NULL)
    gst_buffer_unref (out);
  GST_PAD_PROBE_INFO_FLOW_RETURN (info) = ret;
  return GST_PAD_PROBE_HANDLED;
}

static void
enc_watch_pad (Takeover *t, GstPad *pad)
{
  guint n;
  if (GST_PAD_DIRECTION (pad) != GST_PAD_SINK
      || sscanf (GST_PAD_NAME (pad), "rtp_sink_%u", &n) != 1)
    return;
  /* pad-added and the walk over the pads that were already there may both see a pad */
  g_mutex_lock (&t->lock);
  gboolean seen = g_object_get_data (G_OBJECT (pad), "sk-srtp-takeover") != NULL;
  if (!seen)
    g_object_set_data (G_OBJECT (pad), "sk-srtp-takeover", t);
  g_mutex_unlock (&t->lock);
  if (seen)
    return;
  EncPad *ep = g_new0 (EncPad, 1);
  ep->t = takeover_ref (t);
  ep->src_name = g_strdup_printf ("rtp_src_%u", n);
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST, enc_probe, ep,
                     enc_pad_free);
}

static void
enc_on_pad_added (GstElement *srtpenc, GstPad *pad, gpointer user_data)
{
  enc_watch_pad (user_data, pad);
}

gboolean
sk_srtp_take_over_srtpenc (GstElement *srtpenc)
{
  g_return_val_if_fail (GST_IS_ELEMENT (srtpenc), FALSE);
  ensure_debug_category ();

  g_autoptr (GstElement) dtlssrtpenc = parent_made_by (srtpenc, "dtlssrtpenc");
  if (dtlssrtpenc == NULL || g_signal_lookup ("on-key-set", G_OBJECT_TYPE (dtlssrtpenc)) == 0)
    return FALSE;

  Takeover *t = takeover_new (srtpenc, TRUE);
  g_signal_connect_data (dtlssrtpenc, "on-key-set", G_CALLBACK (enc_on_key_set), takeover_ref (t),
                         takeover_closure_unref, 0);
  g_signal_connect_data (srtpenc, "pad-added", G_CALLBACK (enc_on_pad_added), takeover_ref (t),
                         takeover_closure_unref, 0);
  g_autoptr (GstIterator) it = gst_element_iterate_sink_pads (srtpenc);
  GValue item = G_VALUE_INIT;
  while (gst_iterator_next (it, &item) == GST_ITERATOR_OK) {
    enc_watch_pad (t, g_value_get_object (&item));
    g_value_reset (&item);
  }
  g_value_unset (&item);
  return TRUE;
}

/* --- srtpdec --- */

/* dtlsdec's "on-key-received" (DTLS thread): the key srtpdec would get, through the same
 * "request-key" that dtlssrtpdec answers for it. */
static void
dec_on_key_received (GstElement *dtlsdec, gpointer user_data)
{
  Takeover *t = user_data;
  g_autoptr (GstCaps) caps = NULL;
  g_autoptr (GstBuffer) key = NULL;
  g_signal_emit_by_name (t->element, "request-key", (guint)0, &caps);
  const GstStructure *st = caps != NULL ? gst_caps_get_structure (caps, 0) : NULL;
  if (st != NULL)
    gst_structure_get (st, "srtp-key", GST_TYPE_BUFFER, &key, NULL);
  takeover_set_key (t, key, st != NULL && gst_structure_has_field (st, "mki"),
                    st != NULL ? gst_structure_get_string (st, "srtp-cipher") : NULL,
                    st != NULL ? gst_structure_get_string (st, "srtp-auth") : NULL);
}

#define DROP_LOG_INTERVAL_US (10 * G_USEC_PER_SEC)

/* On srtpdec's rtp_sink, where SRTP and (rtcp-mux) SRTCP arrive one packet per buffer. */
static GstPadProbeReturn
dec_probe (GstPad *pad, GstPadProbeInfo *info, gpointer user_data)
{
  Takeover *t = user_data;
  GstBuffer *buf = GST_PAD_PROBE_INFO_BUFFER (info);
  guint8 head[2];

  /* RFC 5761: packet types 192-223 are RTCP, which srtpdec keeps */
  if (gst_buffer_extract (buf, 0, head, sizeof head) != sizeof head
      || (head[1] >= 192 && head[1] <= 223))
    return GST_PAD_PROBE_OK;
  g_mutex_lock (&t->lock);
  if (t->receiver == NULL) {
    g_mutex_unlock (&t->lock);
    return GST_PAD_PROBE_OK;
  }

  info->data = NULL;
  buf = gst_buffer_make_writable (buf);
  GstMapInfo map;
  SkSrtpStatus status = SK_SRTP_MALFORMED;
  gsize rtp_len = 0;
  if (gst_buffer_map (buf, &map, GST_MAP_READWRITE)) {
    status = sk_srtp_receiver_unprotect (t->receiver, map.data, map.size, &rtp_len);
    gst_buffer_unmap (buf, &map);
  }
  gboolean log_drops = FALSE;
  guint64 dropped[G_N_ELEMENTS (t->dropped)];
  if (status != SK_SRTP_OK) {
    t->dropped[status]++;
    gint64 now = g_get_monotonic_time ();
    if (now - t->last_drop_log_us >= DROP_LOG_INTERVAL_US) {
      t->last_drop_log_us = now;
      log_drops = TRUE;
      memcpy (dropped, t->dropped, sizeof dropped);
    }
  }
  g_mutex_unlock (&t->lock);

  if (log_drops)
    GST_WARNING_OBJECT (
        t->element,
        "dropping SRTP packets (last: %s); so far %" G_GUINT64_FORMAT
        " malformed, %" G_GUINT64_FORMAT " failed authentication, %" G_GUINT64_FORMAT
        " replayed, %" G_GUINT64_FORMAT " of SSRCs past %d",
        sk_srtp_status_to_string (status), dropped[SK_SRTP_MALFORMED], dropped[SK_SRTP_AUTH_FAILED],
        dropped[SK_SRTP_REPLAYED], dropped[SK_SRTP_TOO_MANY_SSRCS], SK_SRTP_MAX_SSRCS);
  GstFlowReturn ret = GST_FLOW_OK;
  if (status == SK_SRTP_OK) {
    gst_buffer_resize (buf, 0, rtp_len);
    g_autoptr (GstPad) src = gst_element_get_static_pad (t->element, "rtp_src");
    ret = src != NULL ? gst_pad_push (src, buf) : (gst_buffer_unref (buf), GST_FLOW_NOT_LINKED);
  } else {
    gst_buffer_unref (buf);
  }
  GST_PAD_PROBE_INFO_FLOW_RETURN (info) = ret;
  return GST_PAD_PROBE_HANDLED;
}

gboolean
sk_srtp_take_over_srtpdec (GstElement *srtpdec)
{
  g_return_val_if_fail (GST_IS_ELEMENT (srtpdec), FALSE);
  ensure_debug_category ();

  g_autoptr (GstElement) dtlssrtpdec = parent_made_by (srtpdec, "dtlssrtpdec");
  g_autoptr (GstElement) dtlsdec = NULL;
  if (dtlssrtpdec != NULL) {
    g_autoptr (GstIterator) it
        = gst_bin_iterate_all_by_element_factory_name (GST_BIN (dtlssrtpdec), "dtlsdec");
    GValue item = G_VALUE_INIT;
    if (gst_iterator_next (it, &item) == GST_ITERATOR_OK)
      dtlsdec = g_value_dup_object (&item);
    g_value_unset (&item);
  }
  g_autoptr (GstPad) sink = gst_element_get_static_pad (srtpdec, "rtp_sink");
  if (dtlsdec == NULL || sink == NULL
      || g_signal_lookup ("on-key-received", G_OBJECT_TYPE (dtlsdec)) == 0
      || g_signal_lookup ("request-key", G_OBJECT_TYPE (srtpdec)) == 0)
    return FALSE;

  Takeover *t = takeover_new (srtpdec, FALSE);
  g_signal_connect_data (dtlsdec, "on-key-received", G_CALLBACK (dec_on_key_received),
                         takeover_ref (t), takeover_closure_unref, 0);
  gst_pad_add_probe (sink, GST_PAD_PROBE_TYPE_BUFFER, dec_probe, takeover_ref (t), takeover_unref);
  return TRUE;
}
