/*
 * streamkeeper: a published track — a fan-out point for encoded media.
 *
 * The publisher's pipeline pushes encoded buffers from its streaming thread; every sink
 * (a WHEP subscriber, later a remote room) receives each buffer. Video tracks keep the last
 * GOP (from the newest keyframe on) and replay it to a new sink so playback starts at once.
 * Thread-safe: push/add/remove may run on any thread. Sink callbacks run on the pushing
 * thread with the track's lock held and must not block (WHEP sinks push into webrtcbin's
 * non-blocking send path).
 */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

typedef enum {
  SK_TRACK_KIND_VIDEO,
  SK_TRACK_KIND_AUDIO,
} SkTrackKind;

/* Inline: the WebRTC helpers use it without linking the track (the WHIP offer fuzzer). */
static inline const char *
sk_track_kind_to_string (SkTrackKind kind)
{
  return kind == SK_TRACK_KIND_VIDEO ? "video" : "audio";
}

typedef struct _SkTrack SkTrack;

/* A sink receives every buffer (transfer none: ref it to keep it). */
typedef void (*SkTrackSinkFunc) (SkTrack *track, GstBuffer *buffer, gpointer user_data);

/* Called (on the pushing thread, lock held) when the track's caps change: a sink whose
 * consumer cannot follow (e.g. new codec) may drop itself later. */
typedef void (*SkTrackCapsFunc) (SkTrack *track, GstCaps *caps, gpointer user_data);

/*
 * @caps: fixed caps of the buffers that will be pushed:
 *   video/x-h264, stream-format=byte-stream, alignment=au (SPS/PPS before each IDR)
 *   video/x-vp8
 *   audio/x-opus
 *   application/x-rtp (media, encoding-name, clock-rate): RTP packets forwarded as they came
 *     (see sk-rtp.h); a video packet that starts a keyframe lacks GST_BUFFER_FLAG_DELTA_UNIT
 *     and one that ends a frame (marker bit) has GST_BUFFER_FLAG_MARKER.
 * The codec name ("H264", "VP8", "opus") is derived from them.
 */
SkTrack *sk_track_new (SkTrackKind kind, const char *sid, GstCaps *caps);
SkTrack *sk_track_ref (SkTrack *track);
void sk_track_unref (SkTrack *track);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkTrack, sk_track_unref)

/* "H264", "VP8", "opus", … (interned) for caps a track may carry; "unknown" if they say nothing. */
const char *sk_track_codec_from_caps (GstCaps *caps);

SkTrackKind sk_track_get_kind (SkTrack *track);
const char *sk_track_get_sid (SkTrack *track);
const char *sk_track_get_codec (SkTrack *track);
GstCaps *sk_track_get_caps (SkTrack *track); /* transfer full */
void sk_track_set_caps (SkTrack *track, GstCaps *caps);

/* Buffers carry PTS in the publisher pipeline's running time; video keyframes are the ones
 * without GST_BUFFER_FLAG_DELTA_UNIT. */
void sk_track_push (SkTrack *track, GstBuffer *buffer);

/* Adds a sink; for video the cached GOP is replayed to it first (under the lock, so it sees
 * no gap and no duplicate). Returns an id > 0. */
guint sk_track_add_sink (SkTrack *track, SkTrackSinkFunc func, SkTrackCapsFunc caps_func,
                         gpointer user_data, GDestroyNotify destroy);
/* After it returns the sink's callbacks are never called again. */
void sk_track_remove_sink (SkTrack *track, guint sink_id);

/* Marks the track ended: sinks are told via an EOS-less "ended" state (sk_track_is_ended). */
void sk_track_end (SkTrack *track);
gboolean sk_track_is_ended (SkTrack *track);

/*
 * Keyframe requests (a subscriber's PLI/FIR) travel back to whoever produces the track: a WHIP
 * publisher (a PLI on its peer connection), an encoder (a forced key unit), or nobody (RTMP
 * passthrough: the request is dropped). The producer installs @func; it runs on the
 * requesting thread, without the track's lock, and must not block. After
 * sk_track_set_keyframe_func (track, NULL, …) returns, the old func is never called again.
 */
typedef void (*SkTrackKeyframeFunc) (SkTrack *track, gpointer user_data);

void sk_track_set_keyframe_func (SkTrack *track, SkTrackKeyframeFunc func, gpointer user_data,
                                 GDestroyNotify destroy);

/* Asks the producer for a keyframe, at most once per SK_TRACK_KEYFRAME_INTERVAL_MS however
 * many subscribers ask. Any thread. Returns TRUE if the request reached a producer. */
#define SK_TRACK_KEYFRAME_INTERVAL_MS 500
gboolean sk_track_request_keyframe (SkTrack *track);

/* Counters for the API and benchmarks. */
guint64 sk_track_get_buffers_pushed (SkTrack *track);
guint64 sk_track_get_bytes_pushed (SkTrack *track);
/* Keyframe requests passed on to the producer / dropped (rate limit or no producer). */
guint64 sk_track_get_keyframe_requests (SkTrack *track, guint64 *dropped);

G_END_DECLS
