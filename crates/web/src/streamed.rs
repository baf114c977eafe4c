//! Multipart responses made part by part (WADO-RS of a study or series, rendered studies and
//! series): each part is made and sent as the client takes them, at most
//! [`PARTS_IN_FLIGHT`] waiting, so a response holds a few parts' memory whatever the size of
//! the study, and its first part decides the status.

use std::future::Future;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::sync::mpsc;

use crate::frames::Refused;

/// Parts made but not yet taken by the client: a slow client holds back the maker, so a
/// response holds this many parts' memory (plus the one being made) at most.
pub(crate) const PARTS_IN_FLIGHT: usize = 2;

/// Where a maker sends its parts (each with its boundary line and headers, as sent), then
/// either the closing boundary or a refusal.
pub(crate) type Parts = mpsc::Sender<Result<Bytes, Refused>>;

/// The body: the first part, then the parts as the maker sends them. A refusal after the
/// first part ends the body short (no closing boundary), so the client sees an incomplete
/// response rather than a complete one with parts missing.
struct Streamed {
    first: Option<Bytes>,
    rest: mpsc::Receiver<Result<Bytes, Refused>>,
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if let Some(b) = self.first.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(b))));
        }
        self.rest.poll_recv(cx).map(|o| {
            o.map(|r| match r {
                Ok(b) => Ok(http_body::Frame::data(b)),
                Err(Refused(status, why)) => {
                    tracing::error!(%status, error = %why, "a multipart response ended short");
                    Err(std::io::Error::other("the response ended short"))
                }
            })
        })
    }
}

/// Runs `make` (given the sender of its parts) as a task of its own and answers with its
/// parts as `content_type`. The first message decides: a part starts a 200 response whose
/// other parts follow as they are made; a refusal (nothing to send, a part that cannot be
/// made) is returned for the caller to answer in its own words, and the maker is stopped.
pub(crate) async fn respond<F, Fut>(content_type: &str, make: F) -> Result<Response, Refused>
where
    F: FnOnce(Parts) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, Refused>>(PARTS_IN_FLIGHT);
    let maker = tokio::spawn(make(tx));
    match rx.recv().await {
        Some(Ok(first)) => {
            let mut resp = Response::new(Body::new(Streamed {
                first: Some(first),
                rest: rx,
            }));
            if let Ok(v) = HeaderValue::from_str(content_type) {
                resp.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            Ok(resp)
        }
        Some(Err(refused)) => {
            maker.abort();
            Err(refused)
        }
        None => {
            maker.abort();
            Err(Refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error".into(),
            ))
        }
    }
}

/// One part as sent: its boundary line, `Content-Type` and other headers, the bytes.
pub(crate) fn part(boundary: &str, headers: &[(&str, &str)], body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(
        body.len()
            .saturating_add(boundary.len())
            .saturating_add(headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum())
            .saturating_add(8),
    );
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary.as_bytes());
    for (name, value) in headers {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
    Bytes::from(out)
}

/// The closing boundary.
pub(crate) fn close(boundary: &str) -> Bytes {
    Bytes::from(format!("--{boundary}--\r\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn the_first_message_decides_and_a_later_refusal_ends_the_body_short() {
        // A refusal first: returned, no response.
        let r = respond("multipart/related; boundary=b", |tx: Parts| async move {
            let _ = tx
                .send(Err(Refused(StatusCode::NOT_FOUND, "not found".into())))
                .await;
        })
        .await;
        assert_eq!(r.err().map(|e| e.0), Some(StatusCode::NOT_FOUND));

        // Parts then the close: a complete body.
        let r = respond("multipart/related; boundary=b", |tx: Parts| async move {
            for i in 0..5u8 {
                if tx
                    .send(Ok(part("b", &[("Content-Type", "x/y")], &[i])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = tx.send(Ok(close("b"))).await;
        })
        .await
        .unwrap();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert!(body.ends_with(b"--b--\r\n"));
        assert_eq!(body.windows(3).filter(|w| w == b"--b").count(), 6);

        // A part, then a refusal: the body fails, never complete.
        let r = respond("multipart/related; boundary=b", |tx: Parts| async move {
            let _ = tx.send(Ok(part("b", &[], b"one"))).await;
            let _ = tx
                .send(Err(Refused(StatusCode::INTERNAL_SERVER_ERROR, "x".into())))
                .await;
        })
        .await
        .unwrap();
        assert!(r.into_body().collect().await.is_err());
    }

    #[tokio::test]
    async fn a_maker_waits_for_a_slow_client() {
        let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = made.clone();
        let r = respond(
            "multipart/related; boundary=b",
            move |tx: Parts| async move {
                for _ in 0..100 {
                    if tx.send(Ok(part("b", &[], b"p"))).await.is_err() {
                        return;
                    }
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            },
        )
        .await
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // The first part was taken to start the response; at most PARTS_IN_FLIGHT more wait.
        assert!(made.load(std::sync::atomic::Ordering::SeqCst) <= 1 + PARTS_IN_FLIGHT + 1);
        drop(r);
    }
}
