//! A small SMTP receiver on loopback, for the tests and the demo: a real server on a real
//! socket that the `smtp` alert channel (lettre) delivers to.
//!
//! It speaks enough RFC 5321 for a submission client: the `220` greeting, `EHLO`/`HELO`
//! (advertising `AUTH PLAIN LOGIN`, `8BITMIME`, `SMTPUTF8` and `SIZE`, but no `STARTTLS`),
//! `AUTH PLAIN` and `AUTH LOGIN` (RFC 4954; any password is accepted and the user name is
//! recorded), `MAIL FROM`, `RCPT TO`, `DATA` (ended by `<CRLF>.<CRLF>`, dot-unstuffed), `RSET`,
//! `NOOP`, `VRFY` and `QUIT`. Every message it accepts is kept as a [`Received`], readable with
//! [`SmtpServer::received`] and awaited with [`SmtpServer::wait_for`].
//! [`SmtpServer::reply_to_data`] makes it refuse messages instead, with any reply, to test
//! how a client handles 4xx and 5xx answers.
//!
//! Lines are bounded ([`MAX_LINE`]), and so are messages ([`MAX_MESSAGE`], answered `552`);
//! a client that sends too many bad commands is disconnected. The server never panics on what a
//! client sends. Dropping the [`SmtpServer`] stops it, open sessions included.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// The longest line accepted, command or message text, without its line break. RFC 5321 asks
/// for 512 (commands) and 1000 (text); this leaves room for long `AUTH` arguments.
pub const MAX_LINE: usize = 4096;

/// The largest message accepted by `DATA`, after dot-unstuffing.
pub const MAX_MESSAGE: usize = 1024 * 1024;

/// The most recipients of one message.
const MAX_RECIPIENTS: usize = 100;

/// How many failed commands a session may send before it is closed.
const MAX_ERRORS: usize = 16;

/// One message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The envelope sender (`MAIL FROM`), without angle brackets; empty for the null sender.
    pub from: String,
    /// The envelope recipients (`RCPT TO`), in order.
    pub to: Vec<String>,
    /// The message (headers and body) as sent after `DATA`, dot-unstuffed, lines ending in
    /// CRLF. Bytes that are not UTF-8 are replaced.
    pub data: String,
    /// The user name the session logged in with, if it did.
    pub user: Option<String>,
}

/// An SMTP server on `127.0.0.1`, serving from a background task; dropping it stops it.
#[derive(Debug)]
pub struct SmtpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    received: Mutex<Vec<Received>>,
    /// How many messages were received; waiters watch it.
    count: watch::Sender<usize>,
    /// The reply to the end of `DATA` instead of accepting the message.
    data_reply: Mutex<Option<String>>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpServer {
    /// Starts a server on `127.0.0.1:0`.
    pub async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (count, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            count,
            data_reply: Mutex::new(None),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            // Sessions live in the set, so aborting this task ends them too.
            let mut sessions = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                while sessions.try_join_next().is_some() {}
                sessions.spawn(session(stream, serving.clone()));
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every message received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received().clone()
    }

    /// Waits until at least `n` messages were received, and returns them all; `None` if
    /// `deadline` passes first.
    pub async fn wait_for(&self, n: usize, deadline: Instant) -> Option<Vec<Received>> {
        let mut count = self.shared.count.subscribe();
        let reached = tokio::time::timeout_at(deadline, count.wait_for(|c| *c >= n)).await;
        matches!(reached, Ok(Ok(_))).then(|| self.received())
    }

    /// From now on, answers the end of every `DATA` with `reply` (say `"550 5.7.1 rejected"`
    /// or `"451 4.3.0 try again later"`) and keeps nothing; `None` accepts messages again.
    pub fn reply_to_data(&self, reply: Option<&str>) {
        *lock(&self.shared.data_reply) = reply.map(str::to_owned);
    }
}

impl Shared {
    fn received(&self) -> MutexGuard<'_, Vec<Received>> {
        lock(&self.received)
    }

    fn accept(&self, message: Received) {
        let count = {
            let mut received = self.received();
            received.push(message);
            received.len()
        };
        self.count.send_replace(count);
    }
}

/// Locks `mutex`; its data stays consistent even if a holder panicked (each is one assignment
/// or push).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The state of one SMTP session.
#[derive(Default)]
struct Session {
    greeted: bool,
    user: Option<String>,
    from: Option<String>,
    to: Vec<String>,
}

/// A line read from the client.
enum Line {
    /// The line, without its line break.
    Text(Vec<u8>),
    /// Longer than the limit.
    TooLong,
    /// The connection ended.
    End,
}

/// Reads one line of at most `max` bytes (not counting CRLF or LF).
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> io::Result<Line> {
    let mut buf = Vec::new();
    let limit = u64::try_from(max + 2).unwrap_or(u64::MAX);
    (&mut *reader)
        .take(limit)
        .read_until(b'\n', &mut buf)
        .await?;
    if buf.last() != Some(&b'\n') {
        // Either the limit cut the line, or the connection ended inside it.
        return Ok(if buf.len() > max {
            Line::TooLong
        } else {
            Line::End
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    if buf.len() > max {
        return Ok(Line::TooLong);
    }
    Ok(Line::Text(buf))
}

/// Serves one client until it quits, misbehaves or disconnects.
async fn session(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let _ = converse(&mut reader, &mut write, &shared).await;
    let _ = write.shutdown().await;
}

async fn converse<R, W>(reader: &mut R, write: &mut W, shared: &Shared) -> io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWriteExt + Unpin,
{
    write.write_all(b"220 pom-testbed ESMTP ready\r\n").await?;
    let mut session = Session::default();
    let mut errors = 0;
    loop {
        let line = match read_line(reader, MAX_LINE).await? {
            Line::Text(line) => String::from_utf8_lossy(&line).into_owned(),
            Line::TooLong => {
                write.write_all(b"500 5.5.2 line too long\r\n").await?;
                return Ok(());
            }
            Line::End => return Ok(()),
        };
        let (verb, arg) = match line.split_once(' ') {
            Some((verb, arg)) => (verb.to_ascii_uppercase(), arg.trim()),
            None => (line.trim().to_ascii_uppercase(), ""),
        };
        let reply = match verb.as_str() {
            "EHLO" => {
                session = Session {
                    greeted: true,
                    user: session.user.take(),
                    ..Session::default()
                };
                format!(
                    "250-pom-testbed greets {}\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n\
                     250-SMTPUTF8\r\n250 SIZE {MAX_MESSAGE}\r\n",
                    printable(arg)
                )
            }
            "HELO" => {
                session.greeted = true;
                session.from = None;
                session.to.clear();
                "250 pom-testbed\r\n".to_owned()
            }
            "AUTH" => auth(reader, write, &mut session, arg).await?,
            "MAIL" => mail(&mut session, arg),
            "RCPT" => rcpt(&mut session, arg),
            "DATA" => {
                if session.from.is_none() || session.to.is_empty() {
                    "503 5.5.1 need MAIL and RCPT first\r\n".to_owned()
                } else {
                    write
                        .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    match data(reader, write, &mut session, shared).await? {
                        Some(reply) => reply,
                        None => return Ok(()),
                    }
                }
            }
            "RSET" => {
                session.from = None;
                session.to.clear();
                "250 2.0.0 OK\r\n".to_owned()
            }
            "NOOP" => "250 2.0.0 OK\r\n".to_owned(),
            "VRFY" => "252 2.5.2 cannot verify, will accept\r\n".to_owned(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            "STARTTLS" => "454 4.7.0 TLS not available\r\n".to_owned(),
            _ => "500 5.5.2 command not recognised\r\n".to_owned(),
        };
        if reply.starts_with('4') || reply.starts_with('5') {
            errors += 1;
            if errors >= MAX_ERRORS {
                write
                    .write_all(b"421 4.7.0 too many errors, closing\r\n")
                    .await?;
                return Ok(());
            }
        }
        write.write_all(reply.as_bytes()).await?;
    }
}

/// `AUTH PLAIN [initial]` or `AUTH LOGIN [user]`: reads what is missing, records the user name,
/// accepts any password.
async fn auth<R, W>(
    reader: &mut R,
    write: &mut W,
    session: &mut Session,
    arg: &str,
) -> io::Result<String>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWriteExt + Unpin,
{
    if !session.greeted {
        return Ok("503 5.5.1 send EHLO first\r\n".to_owned());
    }
    if session.user.is_some() {
        return Ok("503 5.5.1 already authenticated\r\n".to_owned());
    }
    let (mechanism, initial) = match arg.split_once(' ') {
        Some((m, initial)) => (m.to_ascii_uppercase(), Some(initial.trim().to_owned())),
        None => (arg.to_ascii_uppercase(), None),
    };
    let user = match mechanism.as_str() {
        "PLAIN" => {
            let response = match initial {
                Some(initial) => initial,
                None => match challenge(reader, write, "").await? {
                    Some(response) => response,
                    None => return Ok("501 5.7.0 authentication cancelled\r\n".to_owned()),
                },
            };
            // authzid NUL authcid NUL password
            decode_base64(&response).and_then(|plain| {
                let mut parts = plain.split(|&b| b == 0);
                let (_authzid, authcid, _password) = (parts.next()?, parts.next()?, parts.next()?);
                Some(String::from_utf8_lossy(authcid).into_owned())
            })
        }
        "LOGIN" => {
            let user = match initial {
                Some(initial) => initial,
                None => match challenge(reader, write, "VXNlcm5hbWU6").await? {
                    Some(user) => user,
                    None => return Ok("501 5.7.0 authentication cancelled\r\n".to_owned()),
                },
            };
            if challenge(reader, write, "UGFzc3dvcmQ6").await?.is_none() {
                return Ok("501 5.7.0 authentication cancelled\r\n".to_owned());
            }
            decode_base64(&user).map(|u| String::from_utf8_lossy(&u).into_owned())
        }
        _ => return Ok("504 5.5.4 mechanism not supported\r\n".to_owned()),
    };
    Ok(match user {
        Some(user) => {
            session.user = Some(user);
            "235 2.7.0 authentication successful\r\n".to_owned()
        }
        None => "501 5.5.2 cannot decode the response\r\n".to_owned(),
    })
}

/// Sends a `334` challenge and reads the answer; `None` if the client cancels (`*`), sends too
/// much, or leaves.
async fn challenge<R, W>(reader: &mut R, write: &mut W, text: &str) -> io::Result<Option<String>>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWriteExt + Unpin,
{
    write
        .write_all(format!("334 {text}\r\n").as_bytes())
        .await?;
    Ok(match read_line(reader, MAX_LINE).await? {
        Line::Text(line) if line != b"*" => Some(String::from_utf8_lossy(&line).trim().to_owned()),
        _ => None,
    })
}

fn mail(session: &mut Session, arg: &str) -> String {
    if !session.greeted {
        return "503 5.5.1 send EHLO first\r\n".to_owned();
    }
    if session.from.is_some() {
        return "503 5.5.1 nested MAIL command\r\n".to_owned();
    }
    match path_after(arg, "FROM:") {
        Some(from) => {
            session.from = Some(from);
            "250 2.1.0 OK\r\n".to_owned()
        }
        None => "501 5.5.4 expected MAIL FROM:<address>\r\n".to_owned(),
    }
}

fn rcpt(session: &mut Session, arg: &str) -> String {
    if session.from.is_none() {
        return "503 5.5.1 need MAIL first\r\n".to_owned();
    }
    if session.to.len() >= MAX_RECIPIENTS {
        return "452 4.5.3 too many recipients\r\n".to_owned();
    }
    match path_after(arg, "TO:") {
        Some(to) if !to.is_empty() => {
            session.to.push(to);
            "250 2.1.5 OK\r\n".to_owned()
        }
        _ => "501 5.5.4 expected RCPT TO:<address>\r\n".to_owned(),
    }
}

/// The address of `FROM:<a@b> PARAMS` (or `TO:`), without brackets and parameters.
fn path_after(arg: &str, keyword: &str) -> Option<String> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg.get(keyword.len()..)?.trim_start();
    let path = match rest.strip_prefix('<') {
        Some(inner) => inner.split_once('>')?.0,
        None => rest.split_whitespace().next()?,
    };
    Some(path.to_owned())
}

/// Reads the message after `354`, up to the line holding a single dot. Returns the reply, or
/// `None` when the session must end (the client left or sent an over-long line).
async fn data<R, W>(
    reader: &mut R,
    write: &mut W,
    session: &mut Session,
    shared: &Shared,
) -> io::Result<Option<String>>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut message = Vec::new();
    let mut too_big = false;
    loop {
        match read_line(reader, MAX_LINE).await? {
            Line::Text(line) => {
                if line == b"." {
                    break;
                }
                let line = line.strip_prefix(b".").unwrap_or(&line);
                if message.len() + line.len() + 2 > MAX_MESSAGE {
                    too_big = true;
                } else if !too_big {
                    message.extend_from_slice(line);
                    message.extend_from_slice(b"\r\n");
                }
            }
            Line::TooLong => {
                write.write_all(b"500 5.5.2 line too long\r\n").await?;
                return Ok(None);
            }
            Line::End => return Ok(None),
        }
    }
    let from = session.from.take().unwrap_or_default();
    let to = std::mem::take(&mut session.to);
    if too_big {
        return Ok(Some(
            "552 5.3.4 message exceeds the fixed maximum size\r\n".to_owned(),
        ));
    }
    if let Some(reply) = lock(&shared.data_reply).clone() {
        return Ok(Some(format!("{}\r\n", reply.trim_end())));
    }
    shared.accept(Received {
        from,
        to,
        data: String::from_utf8_lossy(&message).into_owned(),
        user: session.user.clone(),
    });
    Ok(Some("250 2.0.0 OK queued\r\n".to_owned()))
}

/// `text` with control characters removed, for echoing it in a reply.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(255).collect()
}

/// Decodes standard base64 (RFC 4648, padding optional); `None` if it is not base64.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    // A single leftover character (6 bits) cannot come from whole bytes.
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_and_rejects() {
        assert_eq!(decode_base64("AHVzZXIAcHc=").unwrap(), b"\0user\0pw");
        assert_eq!(decode_base64("Zm9vYg").unwrap(), b"foob");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("Zm9v!").is_none());
        assert!(decode_base64("Z").is_none());
    }

    #[test]
    fn paths_are_taken_from_their_brackets() {
        assert_eq!(
            path_after("FROM:<a@b.c> SIZE=10", "FROM:").as_deref(),
            Some("a@b.c")
        );
        assert_eq!(path_after("from: <>", "FROM:").as_deref(), Some(""));
        assert_eq!(path_after("TO:x@y", "TO:").as_deref(), Some("x@y"));
        assert_eq!(path_after("TO:<x@y", "TO:"), None);
        assert_eq!(path_after("é", "FROM:"), None);
        assert_eq!(path_after("", "TO:"), None);
    }
}
