/*
 * streamkeeper: SRTP (RFC 3711) protection of the RTP we send.
 *
 * Every WHEP viewer has its own SRTP session, so every packet the node sends is encrypted
 * and authenticated once per viewer. Debian's libsrtp2 is built on NSS and creates and
 * destroys a PKCS#11 context for each packet; that was about 40 % of webrtcbin's send path.
 * This file does AES_CM_128_HMAC_SHA1_80/32 with libcrypto (AES-NI, one cipher and one MAC
 * context per session) and hooks it into webrtcbin's srtpenc, which keeps RTCP and any other
 * profile.
 */
#include "rooms/sk-srtp.h"

#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "common/sk-common.h"

GST_DEBUG_CATEGORY_STATIC (sk_srtp_debug);
#define GST_CAT_DEFAULT sk_srtp_debug

#define RTP_HEADER_LEN 12
#define SEQ_MEDIAN 32768 /* half of the 16-bit sequence number space */

/* RFC 3711 4.3.1 key derivation labels */
enum { LABEL_RTP_ENCRYPTION = 0x00, LABEL_RTP_AUTH = 0x01, LABEL_RTP_SALT = 0x02 };
#define SESSION_AUTH_KEY_LEN 20

struct _SkSrtpSender {
  EVP_CIPHER_CTX *cipher; /* AES-128-CTR with the session encryption key */
  EVP_MAC_CTX *mac;       /* HMAC-SHA1 with the session authentication key */
  guint8 salt[SK_SRTP_MASTER_SALT_LEN];
  guint tag_len;
  GHashTable *index_of_ssrc; /* SSRC → highest packet index sent (48 bits), boxed guint64 */
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
free_sender_parts (SkSrtpSender *self)
{
  EVP_CIPHER_CTX_free (self->cipher);
  EVP_MAC_CTX_free (self->mac);
  g_clear_pointer (&self->index_of_ssrc, g_hash_table_unref);
  OPENSSL_cleanse (self->salt, sizeof self->salt);
}

SkSrtpSender *
sk_srtp_sender_new (const guint8 *master, gsize master_len, guint tag_len, GError **error)
{
  g_return_val_if_fail (master != NULL, NULL);

  if (master_len != SK_SRTP_MASTER_KEY_LEN + SK_SRTP_MASTER_SALT_LEN
      || (tag_len != 10 && tag_len != 4)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                 "SRTP AES_CM_128_HMAC_SHA1 needs a 30-byte master key and salt and a tag of 10 "
                 "or 4 bytes, not %" G_GSIZE_FORMAT " bytes and %u",
                 master_len, tag_len);
    return NULL;
  }

  const guint8 *master_key = master, *master_salt = master + SK_SRTP_MASTER_KEY_LEN;
  guint8 enc_key[SK_SRTP_MASTER_KEY_LEN], auth_key[SESSION_AUTH_KEY_LEN];
  g_autofree SkSrtpSender *self = g_new0 (SkSrtpSender, 1);
  self->tag_len = tag_len;
  gboolean ok = derive (master_key, master_salt, LABEL_RTP_ENCRYPTION, enc_key, sizeof enc_key)
                && derive (master_key, master_salt, LABEL_RTP_AUTH, auth_key, sizeof auth_key)
                && derive (master_key, master_salt, LABEL_RTP_SALT, self->salt, sizeof self->salt);

  self->cipher = EVP_CIPHER_CTX_new ();
  ok = ok && self->cipher != NULL
       && EVP_EncryptInit_ex (self->cipher, EVP_aes_128_ctr (), NULL, enc_key, NULL) == 1;

  EVP_MAC *hmac = EVP_MAC_fetch (NULL, OSSL_MAC_NAME_HMAC, NULL);
  self->mac = hmac != NULL ? EVP_MAC_CTX_new (hmac) : NULL;
  EVP_MAC_free (hmac);
  OSSL_PARAM params[] = {
    OSSL_PARAM_construct_utf8_string (OSSL_MAC_PARAM_DIGEST, (char *)"SHA1", 0),
    OSSL_PARAM_construct_end (),
  };
  ok = ok && self->mac != NULL && EVP_MAC_init (self->mac, auth_key, sizeof auth_key, params) == 1;

  OPENSSL_cleanse (enc_key, sizeof enc_key);
  OPENSSL_cleanse (auth_key, sizeof auth_key);
  if (!ok) {
    free_sender_parts (self);
    g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL,
                 "libcrypto has no AES-128-CTR or HMAC-SHA1 for SRTP");
    return NULL;
  }
  self->index_of_ssrc = g_hash_table_new_full (NULL, NULL, NULL, g_free);
  return g_steal_pointer (&self);
}

void
sk_srtp_sender_free (SkSrtpSender *self)
{
  if (self == NULL)
    return;
  free_sender_parts (self);
  g_free (self);
}

guint
sk_srtp_sender_get_tag_len (const SkSrtpSender *self)
{
  return self->tag_len;
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

gsize
sk_srtp_sender_protect (SkSrtpSender *self, guint8 *packet, gsize len, gsize size)
{
  g_return_val_if_fail (self != NULL && packet != NULL, 0);

  if (len < RTP_HEADER_LEN || (packet[0] >> 6) != 2 || size < len || size - len < self->tag_len
      || len > G_MAXINT)
    return 0;
  gsize header_len = RTP_HEADER_LEN + 4 * (packet[0] & 0x0f);
  if (packet[0] & 0x10) { /* header extension: 4 bytes, then its length in 32-bit words */
    if (header_len + 4 > len)
      return 0;
    header_len += 4 + 4 * (gsize)GST_READ_UINT16_BE (packet + header_len + 2);
  }
  if (header_len > len)
    return 0;

  guint16 seq = GST_READ_UINT16_BE (packet + 2);
  guint32 ssrc = GST_READ_UINT32_BE (packet + 8);
  guint64 *highest = g_hash_table_lookup (self->index_of_ssrc, GUINT_TO_POINTER (ssrc));
  guint64 index = highest != NULL ? estimate_index (*highest, seq) : seq;
  if (highest == NULL) {
    highest = g_new (guint64, 1);
    *highest = index;
    g_hash_table_insert (self->index_of_ssrc, GUINT_TO_POINTER (ssrc), highest);
  } else if (index > *highest) {
    *highest = index;
  }

  /* IV = (salt * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16) */
  guint8 iv[16] = { 0 };
  memcpy (iv, self->salt, sizeof self->salt);
  for (int i = 0; i < 4; i++)
    iv[4 + i] ^= (guint8)(ssrc >> (24 - 8 * i));
  for (int i = 0; i < 6; i++)
    iv[8 + i] ^= (guint8)(index >> (40 - 8 * i));

  int payload_len = (int)(len - header_len), n = 0;
  if (EVP_EncryptInit_ex (self->cipher, NULL, NULL, NULL, iv) != 1
      || EVP_EncryptUpdate (self->cipher, packet + header_len, &n, packet + header_len, payload_len)
             != 1
      || n != payload_len)
    return 0;

  /* tag = HMAC-SHA1 (header || encrypted payload || ROC), truncated */
  guint8 roc[4], digest[EVP_MAX_MD_SIZE];
  GST_WRITE_UINT32_BE (roc, (guint32)(index >> 16));
  size_t digest_len = 0;
  if (EVP_MAC_init (self->mac, NULL, 0, NULL) != 1 || EVP_MAC_update (self->mac, packet, len) != 1
      || EVP_MAC_update (self->mac, roc, sizeof roc) != 1
      || EVP_MAC_final (self->mac, digest, &digest_len, sizeof digest) != 1
      || digest_len < self->tag_len)
    return 0;
  memcpy (packet + len, digest, self->tag_len);
  return len + self->tag_len;
}

/* --- srtpenc take-over --------------------------------------------------------------------- */

/* Lives on the srtpenc; the probes and the key handler hold references. */
typedef struct {
  gint ref_count;
  GMutex lock;
  GstElement *srtpenc;  /* not owned: this lives as long as it */
  SkSrtpSender *sender; /* NULL until DTLS keys arrive (and for profiles we leave to srtpenc) */
} Takeover;

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
  g_mutex_clear (&t->lock);
  g_free (t);
}

static void
takeover_closure_unref (gpointer data, GClosure *closure)
{
  takeover_unref (data);
}

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
takeover_on_key_set (GstElement *dtlssrtpenc, gpointer user_data)
{
  Takeover *t = user_data;
  g_autoptr (GstBuffer) key = NULL, mki = NULL;
  g_object_get (t->srtpenc, "key", &key, "mki", &mki, NULL);
  const char *cipher = enum_nick (G_OBJECT (t->srtpenc), "rtp-cipher");
  const char *auth = enum_nick (G_OBJECT (t->srtpenc), "rtp-auth");
  guint tag_len = g_strcmp0 (auth, "hmac-sha1-80") == 0   ? 10
                  : g_strcmp0 (auth, "hmac-sha1-32") == 0 ? 4
                                                          : 0;

  if (key == NULL || mki != NULL || g_strcmp0 (cipher, "aes-128-icm") != 0 || tag_len == 0) {
    GST_INFO_OBJECT (t->srtpenc, "leaving %s/%s%s to srtpenc", cipher, auth,
                     mki != NULL ? " with an MKI" : "");
    return;
  }
  GstMapInfo map;
  if (!gst_buffer_map (key, &map, GST_MAP_READ))
    return;
  g_autoptr (GError) error = NULL;
  SkSrtpSender *sender = sk_srtp_sender_new (map.data, map.size, tag_len, &error);
  gst_buffer_unmap (key, &map);
  if (sender == NULL) {
    GST_WARNING_OBJECT (t->srtpenc, "leaving SRTP to srtpenc: %s", error->message);
    return;
  }
  g_mutex_lock (&t->lock);
  sk_srtp_sender_free (t->sender);
  t->sender = sender;
  g_mutex_unlock (&t->lock);
  GST_INFO_OBJECT (t->srtpenc, "protecting RTP with libcrypto (%s/%s)", cipher, auth);
}

/* One rtp_sink_%u of srtpenc and its rtp_src_%u. */
typedef struct {
  Takeover *t;
  GstPad *src; /* looked up with the first packet we protect */
  char *src_name;
} TakeoverPad;

static void
takeover_pad_free (gpointer data)
{
  TakeoverPad *tp = data;
  takeover_unref (tp->t);
  gst_clear_object (&tp->src);
  g_free (tp->src_name);
  g_free (tp);
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
takeover_probe (GstPad *pad, GstPadProbeInfo *info, gpointer user_data)
{
  TakeoverPad *tp = user_data;
  Takeover *t = tp->t;

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

  if (tp->src == NULL)
    tp->src = gst_element_get_static_pad (t->srtpenc, tp->src_name);
  GstFlowReturn ret = GST_FLOW_OK;
  if (tp->src == NULL) {
    ret = GST_FLOW_NOT_LINKED;
  } else if (out_list != NULL && gst_buffer_list_length (out_list) > 0) {
    ret = gst_pad_push_list (tp->src, g_steal_pointer (&out_list));
  } else if (out != NULL) {
    ret = gst_pad_push (tp->src, g_steal_pointer (&out));
  }
  if (out_list != NULL)
    gst_buffer_list_unref (out_list);
  if (out != NULL)
    gst_buffer_unref (out);
  GST_PAD_PROBE_INFO_FLOW_RETURN (info) = ret;
  return GST_PAD_PROBE_HANDLED;
}

static void
takeover_watch_pad (Takeover *t, GstPad *pad)
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
  TakeoverPad *tp = g_new0 (TakeoverPad, 1);
  tp->t = takeover_ref (t);
  tp->src_name = g_strdup_printf ("rtp_src_%u", n);
  gst_pad_add_probe (pad, GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_BUFFER_LIST,
                     takeover_probe, tp, takeover_pad_free);
}

static void
takeover_on_pad_added (GstElement *srtpenc, GstPad *pad, gpointer user_data)
{
  takeover_watch_pad (user_data, pad);
}

gboolean
sk_srtp_take_over_srtpenc (GstElement *srtpenc)
{
  g_return_val_if_fail (GST_IS_ELEMENT (srtpenc), FALSE);
  ensure_debug_category ();

  g_autoptr (GstObject) parent = gst_object_get_parent (GST_OBJECT (srtpenc));
  GstElementFactory *factory = parent != NULL && GST_IS_ELEMENT (parent)
                                   ? gst_element_get_factory (GST_ELEMENT (parent))
                                   : NULL;
  if (factory == NULL || !g_str_equal (GST_OBJECT_NAME (factory), "dtlssrtpenc")
      || g_signal_lookup ("on-key-set", G_OBJECT_TYPE (parent)) == 0)
    return FALSE;

  Takeover *t = g_new0 (Takeover, 1);
  t->ref_count = 1;
  g_mutex_init (&t->lock);
  t->srtpenc = srtpenc;
  g_object_set_data_full (G_OBJECT (srtpenc), "sk-srtp-takeover", t, takeover_unref);
  g_signal_connect_data (parent, "on-key-set", G_CALLBACK (takeover_on_key_set), takeover_ref (t),
                         takeover_closure_unref, 0);
  g_signal_connect_data (srtpenc, "pad-added", G_CALLBACK (takeover_on_pad_added), takeover_ref (t),
                         takeover_closure_unref, 0);
  g_autoptr (GstIterator) it = gst_element_iterate_sink_pads (srtpenc);
  GValue item = G_VALUE_INIT;
  while (gst_iterator_next (it, &item) == GST_ITERATOR_OK) {
    takeover_watch_pad (t, g_value_get_object (&item));
    g_value_reset (&item);
  }
  g_value_unset (&item);
  return TRUE;
}
