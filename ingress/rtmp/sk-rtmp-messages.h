/* streamkeeper: RTMP message type ids and constants shared by the protocol files. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Result of the incremental parsers: they consume only whole units. */
typedef enum {
  SK_RTMP_PARSE_OK,        /* a whole unit was consumed */
  SK_RTMP_PARSE_NEED_MORE, /* nothing consumed; *needed says how many bytes the unit takes */
  SK_RTMP_PARSE_ERROR,
} SkRtmpParseStatus;

typedef enum {
  SK_RTMP_MSG_SET_CHUNK_SIZE = 1,
  SK_RTMP_MSG_ABORT = 2,
  SK_RTMP_MSG_ACK = 3,
  SK_RTMP_MSG_USER_CONTROL = 4,
  SK_RTMP_MSG_WINDOW_ACK_SIZE = 5,
  SK_RTMP_MSG_SET_PEER_BANDWIDTH = 6,
  SK_RTMP_MSG_AUDIO = 8,
  SK_RTMP_MSG_VIDEO = 9,
  SK_RTMP_MSG_DATA_AMF3 = 15,
  SK_RTMP_MSG_COMMAND_AMF3 = 17,
  SK_RTMP_MSG_DATA_AMF0 = 18,
  SK_RTMP_MSG_COMMAND_AMF0 = 20,
} SkRtmpMessageType;

typedef enum {
  SK_RTMP_UC_STREAM_BEGIN = 0,
  SK_RTMP_UC_STREAM_EOF = 1,
  SK_RTMP_UC_SET_BUFFER_LENGTH = 3,
  SK_RTMP_UC_PING_REQUEST = 6,
  SK_RTMP_UC_PING_RESPONSE = 7,
} SkRtmpUserControl;

/* Chunk size every connection starts with, in both directions. */
#define SK_RTMP_DEFAULT_CHUNK_SIZE 128
/* Chunk stream ids the server uses for what it sends. */
#define SK_RTMP_CSID_CONTROL 2
#define SK_RTMP_CSID_COMMAND 3
/* Largest csid a 3-byte basic header can carry. */
#define SK_RTMP_MAX_CSID 65599

G_END_DECLS
