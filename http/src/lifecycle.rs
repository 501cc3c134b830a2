//! What an operator (or a service manager) asks of a running server, by signal or by its admin
//! endpoint: read the configuration again (SIGHUP), drain and stop (SIGTERM: finish what is in
//! flight, take nothing new from the routing, stop when empty or when the grace ends), or stop
//! now (SIGINT). Every role reads the same requests from a [`Requests`] channel.

use tokio::sync::mpsc;

/// A request to a running server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Read the configuration again and apply what can change without a restart.
    Reload,
    /// Finish what is in flight and stop when empty, or at the end of the grace period.
    Drain,
    /// Stop now.
    Stop,
}

/// Where a server reads what it is asked; [`Requester`] is the other end, for an admin
/// endpoint.
pub type Requests = mpsc::Receiver<Request>;
pub type Requester = mpsc::Sender<Request>;

/// A channel of requests, with SIGHUP, SIGTERM and SIGINT turned into them. The handlers are
/// installed before this returns (it must be called inside the runtime), so that a signal
/// that comes while the server binds its ports is not lost, nor kills it.
pub fn signals() -> (Requester, Requests) {
    use tokio::signal::unix::{SignalKind, signal};
    let (sender, receiver) = mpsc::channel(16);
    for (kind, request) in [
        (SignalKind::hangup(), Request::Reload),
        (SignalKind::terminate(), Request::Drain),
        (SignalKind::interrupt(), Request::Stop),
    ] {
        let Ok(mut signals) = signal(kind) else {
            tracing::warn!(?request, "cannot listen for the signal");
            continue;
        };
        let sender = sender.clone();
        tokio::spawn(async move {
            while signals.recv().await.is_some() {
                if sender.send(request).await.is_err() {
                    return;
                }
            }
        });
    }
    (sender, receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signals_become_requests() {
        let (_, mut requests) = signals();
        // SAFETY: the signal goes to this process, which handles it above.
        unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
        let request = tokio::time::timeout(std::time::Duration::from_secs(5), requests.recv())
            .await
            .expect("the signal arrives");
        assert_eq!(request, Some(Request::Reload));
    }
}
