//! The edge will own what viewers talk to: the porter that reads request heads, the pull-through
//! cache with request coalescing, the bouncers (token, GeoIP, IP ranges, htpasswd, time windows),
//! the io_uring fan-out engine for continuous streams, and HTTP/1.1, HTTP/2 and HTTP/3 serving.
