/*
 * sk-obs-publisher: an RTMP publisher that behaves like OBS Studio 29 on the wire.
 *
 * OBS uses its own fork of librtmp; this tool drives Debian's librtmp so that the bytes
 * match what OBS sends: a plain handshake (C1 version 0), Set Chunk Size 4096 before
 * anything else, connect {app, type: "nonprivate", flashVer "FMLE/3.0 (compatible;
 * FMSc/1.0)", swfUrl = tcUrl, tcUrl}, releaseStream, FCPublish, createStream, publish "live",
 * @setDataFrame onMetaData with OBS's keys, the AAC then the AVC sequence header, then media
 * paced in real time. A clean stop sends FCUnpublish + deleteStream before closing; SIGKILL
 * of course sends nothing. --reconnect follows OBS's policy: first retry after 2 s, each
 * further one 1.5 times later, every attempt on a new TCP connection.
 *
 * Media comes from an FLV file (audio/video tags are sent as they are, timestamps shifted
 * so that the file loops seamlessly). Progress is printed on stdout as one JSON object per
 * line so that tests can follow it. --stall-every S marks the video for latency measurement:
 * every S seconds it drops video frames for at least 400 ms, up to the next keyframe, and
 * prints when that keyframe is sent ({"event": "stall_end", "mono_us": …}, CLOCK_MONOTONIC
 * like the WHEP client's --latency). The keyframe goes out at its normal time, so what a
 * subscriber measures for it is the ordinary end-to-end delay, jitter buffer included.
 * --hold-media S sends nothing (not even metadata) for S seconds after each accepted publish,
 * as an encoder that is still starting up, while answering the server.
 *
 * Independent of the daemon's code on purpose: it is a peer, not a part.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <glib.h>
#include <librtmp/amf.h>
#include <librtmp/log.h>
#include <librtmp/rtmp.h>

#define OBS_FLASH_VER "FMLE/3.0 (compatible; FMSc/1.0)"
#define OBS_ENCODER_NAME "obs-output module (libobs version 29.0.2)"
#define OBS_CHUNK_SIZE 4096
/* OBS 29's defaults (Settings → Advanced → Automatically Reconnect): RetryDelay 2 s,
 * MaxRetries 25; libobs multiplies the delay by 1.5 from the second retry on, keeping it in
 * whole milliseconds, up to 15 minutes. */
#define OBS_RETRY_FIRST_MS 2000
#define OBS_RETRY_EXP 1.5
#define OBS_RETRY_MAX_MS (15 * 60 * 1000)
#define OBS_RETRY_MAX_COUNT 25

/* The file is ours, but it is still input: refuse absurd sizes before allocating. */
#define FLV_MAX_FILE_SIZE (512u * 1024u * 1024u)
#define FLV_MAX_TAG_SIZE (16u * 1024u * 1024u)

#define CHANNEL_CONTROL 0x02
#define CHANNEL_INVOKE 0x03
#define CHANNEL_SOURCE 0x04

typedef struct {
  guint8 type; /* 8 audio, 9 video, 18 script */
  guint32 timestamp;
  const guint8 *data;
  guint32 size;
} FlvTag;

typedef struct {
  double width, height, framerate, videodatarate;
  double audiodatarate, audiosamplerate, audiochannels;
} StreamInfo;

typedef struct {
  char *file_data;
  GArray *media;              /* FlvTag: audio and video frames, sequence headers excluded */
  const FlvTag *audio_config; /* AAC AudioSpecificConfig tag, if any */
  const FlvTag *video_config; /* AVCDecoderConfigurationRecord tag, if any */
  FlvTag audio_config_tag, video_config_tag;
  StreamInfo info;
  guint32 loop_span_ms; /* added to timestamps on every pass over the file */
} FlvSource;

typedef struct {
  char *url;
  const FlvSource *source;
  gint64 deadline_us; /* monotonic end of --duration, 0 = none */
  gboolean reconnect;
  gint64 stall_every_us; /* --stall-every: latency marks for the benchmark, 0 = none */
  gint64 hold_media_us;  /* --hold-media: silence after NetStream.Publish.Start */
  guint64 sent_audio, sent_video;
  guint32 next_ts; /* timestamp continuity across reconnects */
} Publisher;

static volatile sig_atomic_t stop_requested;

static void
on_stop_signal (int signum)
{
  stop_requested = signum;
}

static void emit (const char *event, const char *fmt, ...) G_GNUC_PRINTF (2, 3);

/* One JSON object per line: {"event": EVENT, "t_ms": …, <fmt>}. */
static void
emit (const char *event, const char *fmt, ...)
{
  g_autofree char *extra = NULL;
  if (fmt != NULL) {
    va_list ap;
    va_start (ap, fmt);
    extra = g_strdup_vprintf (fmt, ap);
    va_end (ap);
  }
  printf ("{\"event\": \"%s\", \"t_ms\": %" G_GINT64_FORMAT "%s%s}\n", event,
          g_get_real_time () / 1000, extra ? ", " : "", extra ? extra : "");
  fflush (stdout);
}

static guint32
read_u24 (const guint8 *p)
{
  return ((guint32)p[0] << 16) | ((guint32)p[1] << 8) | p[2];
}

static double
metadata_number (AMFObject *meta, const char *name, double fallback)
{
  AVal key = { (char *)name, (int)strlen (name) };
  AMFObjectProperty *prop = AMF_GetProp (meta, &key, -1);
  if (prop == NULL)
    return fallback;
  if (AMFProp_GetType (prop) == AMF_BOOLEAN)
    return AMFProp_GetBoolean (prop) ? 1 : 0;
  if (AMFProp_GetType (prop) != AMF_NUMBER)
    return fallback;
  return AMFProp_GetNumber (prop);
}

/* Reads the file's onMetaData for the figures OBS announces (ffmpeg writes them). */
static void
parse_file_metadata (const FlvTag *tag, StreamInfo *info)
{
  AMFObject obj, meta;
  if (AMF_Decode (&obj, (const char *)tag->data, (int)tag->size, FALSE) < 0)
    return;
  AMFObjectProperty *value = AMF_GetProp (&obj, NULL, 1);
  if (value != NULL
      && (AMFProp_GetType (value) == AMF_ECMA_ARRAY || AMFProp_GetType (value) == AMF_OBJECT)) {
    /* AMFProp_GetObject only hands out AMF_OBJECT; an ECMA array is decoded the same way. */
    meta = value->p_vu.p_object;
    info->width = metadata_number (&meta, "width", info->width);
    info->height = metadata_number (&meta, "height", info->height);
    info->framerate = metadata_number (&meta, "framerate", info->framerate);
    info->videodatarate = metadata_number (&meta, "videodatarate", info->videodatarate);
    info->audiodatarate = metadata_number (&meta, "audiodatarate", info->audiodatarate);
    info->audiosamplerate = metadata_number (&meta, "audiosamplerate", info->audiosamplerate);
    if (metadata_number (&meta, "stereo", 1) == 0)
      info->audiochannels = 1;
  }
  AMF_Reset (&obj);
}

static gboolean
is_sequence_header (const FlvTag *tag)
{
  if (tag->size < 2)
    return FALSE;
  if (tag->type == 8)
    return (tag->data[0] >> 4) == 10 && tag->data[1] == 0; /* AAC, AACPacketType 0 */
  if (tag->type == 9)
    return (tag->data[0] & 0x0f) == 7 && tag->data[1] == 0; /* AVC, AVCPacketType 0 */
  return FALSE;
}

static gboolean
flv_source_load (FlvSource *src, const char *path, GError **error)
{
  gsize len = 0;
  guint32 first_ts = G_MAXUINT32, last_audio = 0, last_video = 0, first_video = G_MAXUINT32;
  guint n_video = 0;

  src->info = (StreamInfo){ 1280, 720, 30, 2500, 160, 48000, 2 };
  if (!g_file_get_contents (path, &src->file_data, &len, error))
    return FALSE;
  if (len > FLV_MAX_FILE_SIZE || len < 13 || memcmp (src->file_data, "FLV", 3) != 0) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "%s: not an FLV file", path);
    return FALSE;
  }

  const guint8 *p = (const guint8 *)src->file_data;
  gsize off = ((guint32)p[5] << 24 | (guint32)p[6] << 16 | (guint32)p[7] << 8 | p[8]) + 4;
  src->media = g_array_new (FALSE, FALSE, sizeof (FlvTag));

  /* Tag header (11) + body + PreviousTagSize (4); a truncated last tag is ignored. */
  while (off + 11 <= len) {
    FlvTag tag = { .type = p[off] & 0x1f,
                   .size = read_u24 (p + off + 1),
                   .timestamp = read_u24 (p + off + 4) | ((guint32)p[off + 7] << 24) };
    if (tag.size > FLV_MAX_TAG_SIZE || off + 11 + tag.size > len)
      break;
    tag.data = p + off + 11;
    off += 11 + (gsize)tag.size + 4;

    if (tag.type == 18) {
      parse_file_metadata (&tag, &src->info);
    } else if ((tag.type == 8 || tag.type == 9) && is_sequence_header (&tag)) {
      if (tag.type == 8 && src->audio_config == NULL) {
        src->audio_config_tag = tag;
        src->audio_config = &src->audio_config_tag;
      } else if (tag.type == 9 && src->video_config == NULL) {
        src->video_config_tag = tag;
        src->video_config = &src->video_config_tag;
      }
    } else if ((tag.type == 8 || tag.type == 9) && tag.size > 0) {
      first_ts = MIN (first_ts, tag.timestamp);
      if (tag.type == 9) {
        first_video = MIN (first_video, tag.timestamp);
        last_video = MAX (last_video, tag.timestamp);
        n_video++;
      } else {
        last_audio = MAX (last_audio, tag.timestamp);
      }
      g_array_append_val (src->media, tag);
    }
  }

  if (src->media->len == 0) {
    g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "%s: no audio/video tags", path);
    return FALSE;
  }

  /* Rebase to 0 and compute the span of one pass: the next pass starts one frame after the
   * last frame of each track. */
  for (guint i = 0; i < src->media->len; i++)
    g_array_index (src->media, FlvTag, i).timestamp -= first_ts;
  guint32 vdur = n_video > 1 ? (last_video - first_video) / (n_video - 1) : 33;
  guint32 adur
      = src->info.audiosamplerate > 0 ? (guint32)(1024000 / src->info.audiosamplerate) : 21;
  src->loop_span_ms = MAX (last_video + vdur, last_audio + adur) - first_ts;
  return TRUE;
}

static void
flv_source_clear (FlvSource *src)
{
  g_clear_pointer (&src->media, g_array_unref);
  g_clear_pointer (&src->file_data, g_free);
}

/* librtmp writes chunk headers into the space before (and inside) the body, so every send
 * gets a fresh copy with RTMP_MAX_HEADER_SIZE bytes of headroom. */
static gboolean
send_message (RTMP *r, int channel, guint8 type, guint32 timestamp, gint32 stream_id,
              const void *body, guint32 size, gboolean queue)
{
  RTMPPacket pkt;
  memset (&pkt, 0, sizeof pkt);
  if (!RTMPPacket_Alloc (&pkt, size))
    return FALSE;
  memcpy (pkt.m_body, body, size);
  pkt.m_nBodySize = size;
  pkt.m_nChannel = channel;
  pkt.m_packetType = type;
  pkt.m_nTimeStamp = timestamp;
  pkt.m_nInfoField2 = stream_id;
  /* As OBS's RTMP_Write: a full header for script data and for zero timestamps. */
  pkt.m_headerType = (type == RTMP_PACKET_TYPE_INFO || timestamp == 0 || channel != CHANNEL_SOURCE)
                         ? RTMP_PACKET_SIZE_LARGE
                         : RTMP_PACKET_SIZE_MEDIUM;
  int ok = RTMP_SendPacket (r, &pkt, queue);
  RTMPPacket_Free (&pkt);
  return ok;
}

#define SAVC(name) static const AVal av_##name = AVC (#name)
SAVC (app);
SAVC (connect);
SAVC (flashVer);
SAVC (swfUrl);
SAVC (tcUrl);
SAVC (type);
SAVC (nonprivate);
SAVC (FCUnpublish);
SAVC (deleteStream);
SAVC (onMetaData);
SAVC (duration);
SAVC (fileSize);
SAVC (width);
SAVC (height);
SAVC (videocodecid);
SAVC (videodatarate);
SAVC (framerate);
SAVC (audiocodecid);
SAVC (audiodatarate);
SAVC (audiosamplerate);
SAVC (audiosamplesize);
SAVC (audiochannels);
SAVC (stereo);
SAVC (encoder);
static const AVal av_setDataFrame = AVC ("@setDataFrame");
static const AVal av_2_1 = AVC ("2.1");
static const AVal av_3_1 = AVC ("3.1");
static const AVal av_4_0 = AVC ("4.0");
static const AVal av_4_1 = AVC ("4.1");
static const AVal av_5_1 = AVC ("5.1");
static const AVal av_7_1 = AVC ("7.1");
static const AVal av_obs_encoder = AVC (OBS_ENCODER_NAME);

/* connect, as OBS's SendConnectPacket builds it for a publisher. */
static gboolean
send_connect (RTMP *r)
{
  char buf[4096], *end = buf + sizeof buf, *enc = buf;

  enc = AMF_EncodeString (enc, end, &av_connect);
  enc = AMF_EncodeNumber (enc, end, ++r->m_numInvokes);
  if (enc == NULL)
    return FALSE;
  *enc++ = AMF_OBJECT;
  enc = AMF_EncodeNamedString (enc, end, &av_app, &r->Link.app);
  enc = AMF_EncodeNamedString (enc, end, &av_type, &av_nonprivate);
  enc = AMF_EncodeNamedString (enc, end, &av_flashVer, &r->Link.flashVer);
  enc = AMF_EncodeNamedString (enc, end, &av_swfUrl, &r->Link.swfUrl);
  enc = AMF_EncodeNamedString (enc, end, &av_tcUrl, &r->Link.tcUrl);
  if (enc == NULL || enc + 3 > end)
    return FALSE;
  *enc++ = 0;
  *enc++ = 0;
  *enc++ = AMF_OBJECT_END;
  /* queue = TRUE: librtmp matches the _result to "connect" and then sends releaseStream,
   * FCPublish and createStream, and publish after createStream's _result, as OBS does. */
  return send_message (r, CHANNEL_INVOKE, RTMP_PACKET_TYPE_INVOKE, 0, 0, buf, (guint32)(enc - buf),
                       TRUE);
}

static gboolean
send_metadata (RTMP *r, const StreamInfo *info)
{
  char buf[4096], *end = buf + sizeof buf, *enc = buf;
  int ch = (int)info->audiochannels;

  enc = AMF_EncodeString (enc, end, &av_setDataFrame);
  enc = AMF_EncodeString (enc, end, &av_onMetaData);
  if (enc == NULL)
    return FALSE;
  *enc++ = AMF_ECMA_ARRAY;
  enc = AMF_EncodeInt32 (enc, end, 20);
  enc = AMF_EncodeNamedNumber (enc, end, &av_duration, 0.0);
  enc = AMF_EncodeNamedNumber (enc, end, &av_fileSize, 0.0);
  enc = AMF_EncodeNamedNumber (enc, end, &av_width, info->width);
  enc = AMF_EncodeNamedNumber (enc, end, &av_height, info->height);
  enc = AMF_EncodeNamedNumber (enc, end, &av_videocodecid, 7.0);
  enc = AMF_EncodeNamedNumber (enc, end, &av_videodatarate, info->videodatarate);
  enc = AMF_EncodeNamedNumber (enc, end, &av_framerate, info->framerate);
  enc = AMF_EncodeNamedNumber (enc, end, &av_audiocodecid, 10.0);
  enc = AMF_EncodeNamedNumber (enc, end, &av_audiodatarate, info->audiodatarate);
  enc = AMF_EncodeNamedNumber (enc, end, &av_audiosamplerate, info->audiosamplerate);
  enc = AMF_EncodeNamedNumber (enc, end, &av_audiosamplesize, 16.0);
  enc = AMF_EncodeNamedNumber (enc, end, &av_audiochannels, ch);
  enc = AMF_EncodeNamedBoolean (enc, end, &av_stereo, ch == 2);
  enc = AMF_EncodeNamedBoolean (enc, end, &av_2_1, ch == 3);
  enc = AMF_EncodeNamedBoolean (enc, end, &av_3_1, ch == 4);
  enc = AMF_EncodeNamedBoolean (enc, end, &av_4_0, ch == 4);
  enc = AMF_EncodeNamedBoolean (enc, end, &av_4_1, ch == 5);
  enc = AMF_EncodeNamedBoolean (enc, end, &av_5_1, ch == 6);
  enc = AMF_EncodeNamedBoolean (enc, end, &av_7_1, ch == 8);
  enc = AMF_EncodeNamedString (enc, end, &av_encoder, &av_obs_encoder);
  if (enc == NULL || enc + 3 > end)
    return FALSE;
  *enc++ = 0;
  *enc++ = 0;
  *enc++ = AMF_OBJECT_END;
  return send_message (r, CHANNEL_SOURCE, RTMP_PACKET_TYPE_INFO, 0, r->m_stream_id, buf,
                       (guint32)(enc - buf), FALSE);
}

/* FCUnpublish + deleteStream, as OBS's RTMP_Close does for a live stream. */
static void
send_unpublish (RTMP *r)
{
  char buf[1024], *end = buf + sizeof buf, *enc = buf;

  enc = AMF_EncodeString (enc, end, &av_FCUnpublish);
  enc = AMF_EncodeNumber (enc, end, ++r->m_numInvokes);
  if (enc != NULL) {
    *enc++ = AMF_NULL;
    enc = AMF_EncodeString (enc, end, &r->Link.playpath);
  }
  if (enc != NULL)
    send_message (r, CHANNEL_INVOKE, RTMP_PACKET_TYPE_INVOKE, 0, 0, buf, (guint32)(enc - buf),
                  FALSE);

  enc = buf;
  enc = AMF_EncodeString (enc, end, &av_deleteStream);
  enc = AMF_EncodeNumber (enc, end, ++r->m_numInvokes);
  if (enc != NULL) {
    *enc++ = AMF_NULL;
    enc = AMF_EncodeNumber (enc, end, r->m_stream_id);
  }
  if (enc != NULL)
    send_message (r, CHANNEL_INVOKE, RTMP_PACKET_TYPE_INVOKE, 0, 0, buf, (guint32)(enc - buf),
                  FALSE);
  /* So that RTMP_Close does not send them a second time. */
  r->m_stream_id = 0;
}

/* Reports onStatus/_error codes from the server (e.g. NetStream.Publish.BadName). Returns
 * FALSE when the code means the publish was refused. */
static gboolean
inspect_invoke (const RTMPPacket *pkt)
{
  AMFObject obj;
  AVal method = { 0 }, code = { 0 }, level = { 0 };
  gboolean refused = FALSE;

  if (pkt->m_packetType != RTMP_PACKET_TYPE_INVOKE || pkt->m_nBodySize == 0
      || pkt->m_body[0] != AMF_STRING)
    return TRUE;
  if (AMF_Decode (&obj, pkt->m_body, (int)pkt->m_nBodySize, FALSE) < 0)
    return TRUE;
  AMFProp_GetString (AMF_GetProp (&obj, NULL, 0), &method);
  if (AVMATCH (&method, &(AVal)AVC ("onStatus")) || AVMATCH (&method, &(AVal)AVC ("_error"))) {
    AMFObject info;
    AMFProp_GetObject (AMF_GetProp (&obj, NULL, 3), &info);
    AMFProp_GetString (AMF_GetProp (&info, &(AVal)AVC ("code"), -1), &code);
    AMFProp_GetString (AMF_GetProp (&info, &(AVal)AVC ("level"), -1), &level);
    emit ("status", "\"method\": \"%.*s\", \"code\": \"%.*s\", \"level\": \"%.*s\"", method.av_len,
          method.av_val, code.av_len, code.av_val, level.av_len, level.av_val);
    refused = AVMATCH (&method, &(AVal)AVC ("_error"))
              || (level.av_len == 5 && memcmp (level.av_val, "error", 5) == 0);
  }
  AMF_Reset (&obj);
  return !refused;
}

/* Handles one message from the server; FALSE when the connection is gone or refused. */
static gboolean
read_one (RTMP *r)
{
  RTMPPacket pkt;
  memset (&pkt, 0, sizeof pkt);
  while (RTMP_IsConnected (r)) {
    if (!RTMP_ReadPacket (r, &pkt))
      return FALSE;
    if (!RTMPPacket_IsReady (&pkt))
      continue;
    gboolean ok = inspect_invoke (&pkt);
    RTMP_ClientPacket (r, &pkt);
    RTMPPacket_Free (&pkt);
    return ok && RTMP_IsConnected (r);
  }
  return FALSE;
}

static gboolean
socket_readable (RTMP *r, int timeout_ms)
{
  if (r->m_sb.sb_size > 0)
    return TRUE;
  struct pollfd pfd = { .fd = RTMP_Socket (r), .events = POLLIN };
  return poll (&pfd, 1, timeout_ms) > 0;
}

static gboolean
should_stop (const Publisher *pub)
{
  return stop_requested || (pub->deadline_us && g_get_monotonic_time () >= pub->deadline_us);
}

/*
 * TCP + plain handshake + Set Chunk Size, then connect … publish. The chunk size goes in
 * place of librtmp's own connect packet (RTMP_Connect sends the packet it is given right
 * after the handshake), so that the order on the wire is OBS's.
 */
static gboolean
publisher_connect (Publisher *pub, RTMP *r, char *url_copy)
{
  char chunk_body[4];
  RTMP_Init (r);
  if (!RTMP_SetupURL (r, url_copy)) {
    emit ("error", "\"message\": \"bad url\"");
    return FALSE;
  }
  RTMP_EnableWrite (r);
  r->Link.flashVer = (AVal)AVC (OBS_FLASH_VER);
  r->Link.swfUrl = r->Link.tcUrl;
  r->Link.timeout = 5; /* seconds, for connect and every blocking read */

  AMF_EncodeInt32 (chunk_body, chunk_body + 4, OBS_CHUNK_SIZE);
  RTMPPacket chunk_pkt;
  char chunk_buf[RTMP_MAX_HEADER_SIZE + 4];
  memset (&chunk_pkt, 0, sizeof chunk_pkt);
  memcpy (chunk_buf + RTMP_MAX_HEADER_SIZE, chunk_body, 4);
  chunk_pkt.m_nChannel = CHANNEL_CONTROL;
  chunk_pkt.m_headerType = RTMP_PACKET_SIZE_LARGE;
  chunk_pkt.m_packetType = RTMP_PACKET_TYPE_CHUNK_SIZE;
  chunk_pkt.m_body = chunk_buf + RTMP_MAX_HEADER_SIZE;
  chunk_pkt.m_nBodySize = 4;

  if (!RTMP_Connect (r, &chunk_pkt)) {
    emit ("connect_failed", "\"stage\": \"tcp_or_handshake\"");
    return FALSE;
  }
  r->m_outChunkSize = OBS_CHUNK_SIZE;
  emit ("handshake_done", NULL);

  if (!send_connect (r)) {
    emit ("connect_failed", "\"stage\": \"connect\"");
    RTMP_Close (r);
    return FALSE;
  }

  /* librtmp answers _result(connect) and _result(createStream) itself; m_bPlaying turns
   * on with NetStream.Publish.Start. */
  gint64 give_up = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
  while (!r->m_bPlaying) {
    if (should_stop (pub) || g_get_monotonic_time () > give_up || !socket_readable (r, 100)) {
      if (should_stop (pub) || g_get_monotonic_time () > give_up) {
        emit ("connect_failed", "\"stage\": \"publish\", \"timeout\": true");
        RTMP_Close (r);
        return FALSE;
      }
      continue;
    }
    if (!read_one (r)) {
      emit ("connect_failed", "\"stage\": \"publish\"");
      if (RTMP_IsConnected (r))
        RTMP_Close (r);
      return FALSE;
    }
  }
  emit ("publishing", "\"stream_id\": %d", r->m_stream_id);
  return TRUE;
}

static gboolean
send_tag (Publisher *pub, RTMP *r, const FlvTag *tag, guint32 ts)
{
  if (!send_message (r, CHANNEL_SOURCE, tag->type, ts, r->m_stream_id, tag->data, tag->size, FALSE))
    return FALSE;
  if (tag->type == 9)
    pub->sent_video++;
  else
    pub->sent_audio++;
  return TRUE;
}

typedef enum { RUN_DUE, RUN_STOPPED, RUN_LOST } RunResult;

/* Waits until @due (monotonic µs) while answering pings/acks and noticing a closed socket. */
static RunResult
serve_until (Publisher *pub, RTMP *r, gint64 due)
{
  for (;;) {
    if (should_stop (pub))
      return RUN_STOPPED;
    gint64 wait_us = due - g_get_monotonic_time ();
    /* Rounded up: a wait under 1 ms as poll (0) would spin until the tag is due. */
    int wait_ms = wait_us > 0 ? (int)MIN ((wait_us + 999) / 1000, 50) : 0;
    if (socket_readable (r, wait_ms)) {
      if (!read_one (r))
        return RUN_LOST;
    } else if (wait_us <= 0) {
      return RUN_DUE;
    }
  }
}

/* Sends metadata, headers and media until stopped or the connection drops. */
static RunResult
publisher_stream (Publisher *pub, RTMP *r)
{
  const FlvSource *src = pub->source;
  guint32 base = pub->next_ts;

  if (pub->hold_media_us > 0) {
    RunResult held = serve_until (pub, r, g_get_monotonic_time () + pub->hold_media_us);
    if (held != RUN_DUE)
      return held;
    emit ("held", NULL);
  }
  if (!send_metadata (r, &src->info))
    return RUN_LOST;
  if (src->audio_config && !send_tag (pub, r, src->audio_config, base))
    return RUN_LOST;
  if (src->video_config && !send_tag (pub, r, src->video_config, base))
    return RUN_LOST;

  gint64 t0 = g_get_monotonic_time ();
  gint64 next_stall = pub->stall_every_us ? t0 + pub->stall_every_us : 0;
  gint64 skip_until = 0; /* dropping video for a latency mark while non-zero */
  guint32 offset = base;
  for (;;) {
    for (guint i = 0; i < src->media->len; i++) {
      const FlvTag *tag = &g_array_index (src->media, FlvTag, i);
      guint32 ts = offset + tag->timestamp;
      gint64 due = t0 + (gint64)(ts - base) * 1000;

      RunResult waited = serve_until (pub, r, due);
      if (waited != RUN_DUE) {
        pub->next_ts = ts;
        return waited;
      }
      /* A benchmark mark: a hole in the video that ends with a keyframe. A subscriber sees
       * the same hole; the first frame it decodes after it is this keyframe. */
      if (next_stall && !skip_until && g_get_monotonic_time () >= next_stall)
        skip_until = g_get_monotonic_time () + 400 * 1000;
      if (skip_until && tag->type == 9) {
        gboolean keyframe = tag->size > 0 && (tag->data[0] >> 4) == 1;
        gint64 now = g_get_monotonic_time ();
        if (!keyframe || now < skip_until)
          continue;
        skip_until = 0;
        next_stall = now + pub->stall_every_us;
        emit ("stall_end", "\"mono_us\": %" G_GINT64_FORMAT ", \"ts\": %u", now, ts);
      }
      if (!send_tag (pub, r, tag, ts)) {
        pub->next_ts = ts;
        return RUN_LOST;
      }
    }
    offset += src->loop_span_ms;
    emit ("loop", "\"sent_video\": %" G_GUINT64_FORMAT ", \"sent_audio\": %" G_GUINT64_FORMAT,
          pub->sent_video, pub->sent_audio);
  }
}

/* Sleeps @ms unless a stop is requested; FALSE if it was. */
static gboolean
sleep_interruptible (Publisher *pub, guint ms)
{
  gint64 until = g_get_monotonic_time () + (gint64)ms * 1000;
  while (g_get_monotonic_time () < until) {
    if (should_stop (pub))
      return FALSE;
    g_usleep (20 * 1000);
  }
  return !should_stop (pub);
}

static int
publisher_run (Publisher *pub)
{
  guint retries = 0;
  guint32 retry_ms = OBS_RETRY_FIRST_MS;

  for (;;) {
    RTMP *r = RTMP_Alloc ();
    g_autofree char *url_copy = g_strdup (pub->url); /* librtmp keeps pointers into it */
    emit ("connecting", "\"attempt\": %u", retries + 1);
    gboolean up = publisher_connect (pub, r, url_copy);
    RunResult res = RUN_LOST;

    if (up) {
      retries = 0;
      retry_ms = OBS_RETRY_FIRST_MS;
      res = publisher_stream (pub, r);
      if (res == RUN_STOPPED && RTMP_IsConnected (r)) {
        send_unpublish (r);
        RTMP_Close (r);
        emit ("stopped",
              "\"clean\": true, \"sent_video\": %" G_GUINT64_FORMAT
              ", \"sent_audio\": %" G_GUINT64_FORMAT,
              pub->sent_video, pub->sent_audio);
      } else {
        emit ("disconnected",
              "\"sent_video\": %" G_GUINT64_FORMAT ", \"sent_audio\": %" G_GUINT64_FORMAT,
              pub->sent_video, pub->sent_audio);
        r->m_stream_id = 0; /* the peer is gone: no goodbye */
        RTMP_Close (r);
      }
    }
    RTMP_Free (r);

    if (res == RUN_STOPPED || should_stop (pub)) {
      if (!up)
        emit ("stopped", "\"clean\": false");
      return 0;
    }
    if (!pub->reconnect)
      return up ? 3 : 2;
    if (++retries > OBS_RETRY_MAX_COUNT) {
      emit ("gave_up", "\"retries\": %u", retries - 1);
      return 2;
    }
    emit ("reconnect_wait", "\"ms\": %u", retry_ms);
    if (!sleep_interruptible (pub, retry_ms)) {
      emit ("stopped", "\"clean\": false");
      return 0;
    }
    retry_ms = (guint32)MIN (retry_ms * OBS_RETRY_EXP, OBS_RETRY_MAX_MS);
  }
}

int
main (int argc, char **argv)
{
  g_autofree char *url = NULL;
  g_autofree char *flv = NULL;
  double duration = 0;
  gboolean reconnect = FALSE, verbose = FALSE;
  double stall_every = 0;
  double hold_media = 0;
  GOptionEntry entries[] = {
    { "url", 0, 0, G_OPTION_ARG_STRING, &url, "rtmp://HOST:PORT/APP/KEY", "URL" },
    { "flv", 0, 0, G_OPTION_ARG_FILENAME, &flv, "FLV file with H.264 + AAC to loop", "FILE" },
    { "duration", 0, 0, G_OPTION_ARG_DOUBLE, &duration, "Stop cleanly after S seconds", "S" },
    { "reconnect", 0, 0, G_OPTION_ARG_NONE, &reconnect, "Reconnect like OBS (2 s, x1.5)", NULL },
    { "stall-every", 0, 0, G_OPTION_ARG_DOUBLE, &stall_every,
      "Benchmark: a >= 400 ms video hole ending at a keyframe every S s", "S" },
    { "hold-media", 0, 0, G_OPTION_ARG_DOUBLE, &hold_media,
      "Send nothing for S s after each publish is accepted (an encoder still starting)", "S" },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "librtmp debug log on stderr", NULL },
    { NULL }
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- publish like OBS Studio 29");
  g_autoptr (GError) error = NULL;
  FlvSource src = { 0 };

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || url == NULL || flv == NULL) {
    g_printerr ("sk-obs-publisher: %s\n",
                error ? error->message : "--url and --flv are required (see --help)");
    return 1;
  }
  if (!flv_source_load (&src, flv, &error)) {
    g_printerr ("sk-obs-publisher: %s\n", error->message);
    flv_source_clear (&src);
    return 1;
  }

  /* SIGPIPE would kill us on a send to a closed peer; a failed send is how we notice. */
  signal (SIGPIPE, SIG_IGN);
  struct sigaction sa = { .sa_handler = on_stop_signal };
  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  RTMP_LogSetLevel (verbose ? RTMP_LOGDEBUG : RTMP_LOGERROR);

  Publisher pub = { .url = url,
                    .source = &src,
                    .reconnect = reconnect,
                    .stall_every_us = (gint64)(stall_every * G_USEC_PER_SEC),
                    .hold_media_us = (gint64)(hold_media * G_USEC_PER_SEC) };
  if (duration > 0)
    pub.deadline_us = g_get_monotonic_time () + (gint64)(duration * G_USEC_PER_SEC);
  emit ("start", "\"media_tags\": %u, \"loop_ms\": %u, \"width\": %g, \"height\": %g",
        src.media->len, src.loop_span_ms, src.info.width, src.info.height);
  int rc = publisher_run (&pub);
  flv_source_clear (&src);
  return rc;
}
