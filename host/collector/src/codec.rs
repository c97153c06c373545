//! gRPC codecs that carry an OTLP request as its protobuf bytes: the receiver reads the request
//! message without decoding it ([`RawRequestCodec`]), the exporter sends the bytes it holds
//! ([`RawResponseCodec`]). The other direction, the small `Export*ServiceResponse`, is an
//! ordinary prost message. Framing and gzip stay tonic's.
//!
//! Ownership: decoding takes the message out of tonic's receive buffer with
//! [`bytes::Buf::copy_to_bytes`] (which splits off the buffer's own allocation rather than
//! copying when it can); encoding writes the lent bytes into tonic's send buffer (tonic frames
//! and compresses from there, so that one copy per call is tonic's, not ours).

use std::marker::PhantomData;

use bytes::{Buf as _, BufMut as _, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Server side: decodes the request message as raw [`Bytes`], encodes the prost response `R`.
#[derive(Debug)]
pub struct RawRequestCodec<R>(PhantomData<fn() -> R>);

/// Client side: encodes the request from raw [`Bytes`], decodes the prost response `R`.
#[derive(Debug)]
pub struct RawResponseCodec<R>(PhantomData<fn() -> R>);

impl<R> Default for RawRequestCodec<R> {
    fn default() -> Self {
        RawRequestCodec(PhantomData)
    }
}

impl<R> Default for RawResponseCodec<R> {
    fn default() -> Self {
        RawResponseCodec(PhantomData)
    }
}

impl<R: prost::Message + Send + 'static> Codec for RawRequestCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ProstEncoder<R>;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

impl<R: prost::Message + Default + Send + 'static> Codec for RawResponseCodec<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = BytesEncoder;
    type Decoder = ProstDecoder<R>;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

/// Yields the whole message as [`Bytes`], undecoded.
#[derive(Debug, Default)]
pub struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

/// Writes already-encoded protobuf bytes as the message.
#[derive(Debug, Default)]
pub struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len());
        dst.put(item);
        Ok(())
    }
}

/// Encodes a prost message (the `Export*ServiceResponse`).
#[derive(Debug)]
pub struct ProstEncoder<R>(PhantomData<fn() -> R>);

impl<R: prost::Message> Encoder for ProstEncoder<R> {
    type Item = R;
    type Error = Status;

    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
    }
}

/// Decodes a prost message (the peer's `Export*ServiceResponse`).
#[derive(Debug)]
pub struct ProstDecoder<R>(PhantomData<fn() -> R>);

impl<R: prost::Message + Default> Decoder for ProstDecoder<R> {
    type Item = R;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, Status> {
        R::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("the peer's response is not OTLP: {e}")))
    }
}
