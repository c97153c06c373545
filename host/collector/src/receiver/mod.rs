//! The OTLP receiver (`otlp` in `receivers:`): OTLP/gRPC ([`grpc`]) and OTLP/HTTP ([`http`])
//! listeners handing each request to the pipelines of its signal.

pub mod grpc;
pub mod http;
