//! A small authoritative DNS server on loopback, for the tests and the demo.
//!
//! It owns one [`Zone`] — records by name, plus names that misbehave on purpose — and serves it
//! over UDP and TCP (two-byte length prefix, RFC 1035 §4.2.2) on the same `127.0.0.1` port. Its
//! answers are authoritative: the records of the asked name and type (following a CNAME to the
//! asked type when the target is in the zone, and answering the CNAME alone when it is not),
//! NODATA (NOERROR, no answers) when the name only has other types, and NXDOMAIN when the name
//! is unknown. Negative answers carry no SOA, so nothing caches them. A name can instead be set
//! to answer SERVFAIL or REFUSED, to never answer, to answer with records of the wrong type, or
//! to answer with bytes that are not a DNS message (see [`Behaviour`]). Queries that do not
//! decode are ignored: the server never panics on what a client sends. Dropping the
//! [`DnsServer`] stops it, TCP connections included.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, MX, NS, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// The TTL of every answer record.
const TTL: u32 = 60;

/// The largest UDP answer sent to a client that did not announce a size with EDNS (RFC 1035).
const CLASSIC_UDP_PAYLOAD: u16 = 512;

/// The UDP payload size the server announces, and the most it sends (the DNS flag day default).
const SERVER_UDP_PAYLOAD: u16 = 1232;

/// How many CNAMEs are followed before giving up, so that a loop in a zone ends.
const MAX_CNAME_CHAIN: usize = 8;

/// How many times [`DnsServer::start`] tries to find a port free for both UDP and TCP.
const BIND_ATTEMPTS: usize = 8;

/// What follows the query's id in a [`Behaviour::Garbage`] answer: not a DNS message (the header
/// claims 65535 records of each section, and what follows is not even a name).
const GARBAGE: &[u8] = b"\x81\x80\xff\xff\xff\xff\xff\xffnot dns";

/// How a name misbehaves instead of being answered from its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Behaviour {
    /// Answer SERVFAIL.
    ServFail,
    /// Answer REFUSED.
    Refused,
    /// Never answer: the query is dropped, so the client times out. Over TCP the connection is
    /// held open.
    Drop,
    /// Answer NOERROR with a record of another type than asked: a TXT record, or an A record
    /// (`192.0.2.1`) when TXT is asked.
    WrongType,
    /// Answer with bytes that are not a DNS message. They start with the query's id, so the
    /// client cannot dismiss them as a stray packet and has to try to decode them.
    Garbage,
}

/// The records and misbehaving names a [`DnsServer`] serves.
///
/// Names are absolute and compared without regard to case; `"www.example.com"` and
/// `"WWW.Example.COM."` are the same name. Built with chained calls:
///
/// ```
/// use pom::testbed::dns::{Behaviour, Zone};
///
/// let zone = Zone::new()
///     .a("example.com", [192, 0, 2, 1])
///     .cname("www.example.com", "example.com")
///     .behave("broken.example.com", Behaviour::ServFail);
/// ```
///
/// The builders take names as text and panic when one is not a valid domain name: zones are
/// written by tests and the demo as literals, never built from outside input, so an invalid name
/// is a bug in the caller.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    records: Vec<Record>,
    behaviours: HashMap<Name, Behaviour>,
}

impl Zone {
    /// An empty zone: every name is NXDOMAIN.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a record of any type.
    ///
    /// # Panics
    ///
    /// When `name` is not a valid domain name (see [`Zone`]).
    pub fn record(mut self, name: &str, data: RData) -> Self {
        self.records
            .push(Record::from_rdata(absolute(name), TTL, data));
        self
    }

    /// Adds an A record.
    pub fn a(self, name: &str, ip: impl Into<Ipv4Addr>) -> Self {
        self.record(name, RData::A(A(ip.into())))
    }

    /// Adds an AAAA record.
    pub fn aaaa(self, name: &str, ip: impl Into<Ipv6Addr>) -> Self {
        self.record(name, RData::AAAA(AAAA(ip.into())))
    }

    /// Adds a CNAME record pointing `name` at `target`.
    pub fn cname(self, name: &str, target: &str) -> Self {
        self.record(name, RData::CNAME(CNAME(absolute(target))))
    }

    /// Adds an MX record.
    pub fn mx(self, name: &str, preference: u16, exchange: &str) -> Self {
        self.record(name, RData::MX(MX::new(preference, absolute(exchange))))
    }

    /// Adds a TXT record made of one string.
    pub fn txt(self, name: &str, text: &str) -> Self {
        self.record(name, RData::TXT(TXT::new(vec![text.to_owned()])))
    }

    /// Adds an NS record.
    pub fn ns(self, name: &str, host: &str) -> Self {
        self.record(name, RData::NS(NS(absolute(host))))
    }

    /// Makes `name` misbehave: its queries, whatever their type, get `behaviour` instead of an
    /// answer from its records.
    ///
    /// # Panics
    ///
    /// When `name` is not a valid domain name (see [`Zone`]).
    pub fn behave(mut self, name: &str, behaviour: Behaviour) -> Self {
        self.behaviours.insert(absolute(name), behaviour);
        self
    }

    /// The records owned by `name`.
    fn owned<'a>(&'a self, name: &'a Name) -> impl Iterator<Item = &'a Record> {
        self.records.iter().filter(move |r| r.name == *name)
    }

    /// The answer to one question, as a response code and answer records.
    fn answer(&self, name: &Name, rtype: RecordType) -> (ResponseCode, Vec<Record>) {
        if self.owned(name).next().is_none() {
            return (ResponseCode::NXDomain, Vec::new());
        }
        let mut answers = Vec::new();
        let mut current = name.clone();
        for _ in 0..MAX_CNAME_CHAIN {
            let exact: Vec<Record> = self
                .owned(&current)
                .filter(|r| r.record_type() == rtype)
                .map(|r| with_owner(r, name, &current))
                .collect();
            if !exact.is_empty() || rtype == RecordType::CNAME {
                answers.extend(exact);
                break;
            }
            let Some(alias) = self
                .owned(&current)
                .find(|r| r.record_type() == RecordType::CNAME)
            else {
                break;
            };
            answers.push(with_owner(alias, name, &current));
            match &alias.data {
                RData::CNAME(target) => current = target.0.clone(),
                _ => break,
            }
        }
        (ResponseCode::NoError, answers)
    }
}

/// Parses `name` as an absolute domain name.
///
/// # Panics
///
/// When `name` is not a valid domain name; see [`Zone`] for why that is a bug in the caller.
fn absolute(name: &str) -> Name {
    let mut parsed = Name::from_ascii(name)
        .unwrap_or_else(|e| panic!("invalid domain name {name:?} in a test zone: {e}"));
    parsed.set_fqdn(true);
    parsed
}

/// `record`, owned by the name as the client spelled it when it is the asked name (so that case
/// is echoed back), and by `current` otherwise (a CNAME target).
fn with_owner(record: &Record, asked: &Name, current: &Name) -> Record {
    let owner = if current == asked { asked } else { current };
    Record::from_rdata(owner.clone(), record.ttl, record.data.clone())
}

/// A running DNS server; dropping it stops it.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsServer {
    /// Starts serving `zone` over UDP and TCP on one `127.0.0.1` port chosen by the system.
    pub async fn start(zone: Zone) -> io::Result<Self> {
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let task = tokio::spawn(serve(Arc::new(zone), udp, tcp));
        Ok(Self { addr, task })
    }

    /// The address both the UDP socket and the TCP listener are bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Binds a UDP socket on a free port, then a TCP listener on the same port; tries again with
/// another port when TCP's is taken.
async fn bind_pair() -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
}

/// The server loop: UDP queries are answered inline, TCP connections each get a task in a set
/// that is dropped, and so aborted, with this task.
async fn serve(zone: Arc<Zone>, udp: UdpSocket, tcp: TcpListener) {
    let mut connections = JoinSet::new();
    let mut buf = vec![0_u8; usize::from(u16::MAX)];
    loop {
        while connections.try_join_next().is_some() {}
        tokio::select! {
            received = udp.recv_from(&mut buf) => {
                let Ok((len, peer)) = received else { continue };
                if let Some(reply) = respond(&zone, &buf[..len], Transport::Udp) {
                    // A lost UDP answer is the client's timeout to handle, as on a real network.
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
            accepted = tcp.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_tcp(Arc::clone(&zone), stream));
                }
            }
        }
    }
}

/// Answers length-prefixed queries on one TCP connection until the client closes it.
async fn serve_tcp(zone: Arc<Zone>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0_u8; usize::from(u16::MAX)];
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let query = &mut buf[..usize::from(len)];
        if stream.read_exact(query).await.is_err() {
            return;
        }
        let Some(reply) = respond(&zone, query, Transport::Tcp) else {
            continue;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            continue;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// The bytes to send back for the query in `bytes`, or `None` to stay silent (an undecodable
/// query, a message that is not a query, or a name set to [`Behaviour::Drop`]).
fn respond(zone: &Zone, bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let query = Message::from_vec(bytes).ok()?;
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut response = Message::new(
        query.metadata.id,
        MessageType::Response,
        query.metadata.op_code,
    );
    response.metadata = Metadata::response_from_request(&query.metadata);
    response.add_queries(query.queries.iter().cloned());
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(SERVER_UDP_PAYLOAD);
        response.set_edns(edns);
    }
    let question = match query.queries.as_slice() {
        _ if query.metadata.op_code != OpCode::Query => {
            response.metadata.response_code = ResponseCode::NotImp;
            return response.to_vec().ok();
        }
        [question] => question,
        _ => {
            response.metadata.response_code = ResponseCode::FormErr;
            return response.to_vec().ok();
        }
    };
    let name = question.name();
    let rtype = question.query_type();
    match zone.behaviours.get(name) {
        Some(Behaviour::Drop) => return None,
        Some(Behaviour::Garbage) => {
            let mut garbage = query.metadata.id.to_be_bytes().to_vec();
            garbage.extend_from_slice(GARBAGE);
            return Some(garbage);
        }
        Some(Behaviour::ServFail) => response.metadata.response_code = ResponseCode::ServFail,
        Some(Behaviour::Refused) => response.metadata.response_code = ResponseCode::Refused,
        Some(Behaviour::WrongType) => {
            response.metadata.authoritative = true;
            let wrong = if rtype == RecordType::TXT {
                RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))
            } else {
                RData::TXT(TXT::new(vec!["not the type you asked for".to_owned()]))
            };
            response.add_answer(Record::from_rdata(name.clone(), TTL, wrong));
        }
        None => {
            response.metadata.authoritative = true;
            let (code, answers) = zone.answer(name, rtype);
            response.metadata.response_code = code;
            response.add_answers(answers);
        }
    }
    let encoded = response.to_vec().ok()?;
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => usize::from(query.edns.as_ref().map_or(CLASSIC_UDP_PAYLOAD, |edns| {
            edns.max_payload()
                .clamp(CLASSIC_UDP_PAYLOAD, SERVER_UDP_PAYLOAD)
        })),
    };
    if encoded.len() > limit {
        // Too big for this transport: say so with TC, and the client retries over TCP.
        return response.truncate().to_vec().ok();
    }
    Some(encoded)
}

#[cfg(test)]
mod tests {
    use hickory_resolver::proto::op::Query;

    use super::*;

    fn zone() -> Zone {
        Zone::new()
            .a("example.com", [192, 0, 2, 1])
            .a("example.com", [192, 0, 2, 2])
            .txt("example.com", "v=spf1 -all")
            .cname("www.example.com", "example.com")
            .cname("loop1.example.com", "loop2.example.com")
            .cname("loop2.example.com", "loop1.example.com")
    }

    fn query(name: &str, rtype: RecordType) -> Vec<u8> {
        let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
        message.add_query(Query::query(absolute(name), rtype));
        message.to_vec().expect("a query encodes")
    }

    fn ask(zone: &Zone, name: &str, rtype: RecordType) -> Message {
        let reply = respond(zone, &query(name, rtype), Transport::Udp).expect("an answer");
        Message::from_vec(&reply).expect("the answer decodes")
    }

    #[test]
    fn answers_nodata_nxdomain_and_follows_cnames() {
        let zone = zone();
        let a = ask(&zone, "EXAMPLE.com", RecordType::A);
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.metadata.authoritative);
        assert_eq!(a.metadata.id, 0x1234);
        assert_eq!(a.answers.len(), 2);

        let nodata = ask(&zone, "example.com", RecordType::AAAA);
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());

        let nx = ask(&zone, "nope.example.com", RecordType::A);
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);

        let www = ask(&zone, "www.example.com", RecordType::A);
        let types: Vec<_> = www.answers.iter().map(Record::record_type).collect();
        assert_eq!(types, [RecordType::CNAME, RecordType::A, RecordType::A]);

        let looped = ask(&zone, "loop1.example.com", RecordType::A);
        assert_eq!(looped.answers.len(), MAX_CNAME_CHAIN);
    }

    #[test]
    fn ignores_what_does_not_decode() {
        let zone = zone();
        assert!(respond(&zone, &[], Transport::Udp).is_none());
        assert!(respond(&zone, &[0xff; 5], Transport::Udp).is_none());
        let mut cut = query("example.com", RecordType::A);
        cut.truncate(cut.len() - 3);
        assert!(respond(&zone, &cut, Transport::Udp).is_none());
    }

    #[test]
    fn big_udp_answers_are_truncated() {
        let mut zone = Zone::new();
        for i in 0..60 {
            zone = zone.a("big.example.com", [10, 0, 0, i]);
        }
        let reply = respond(
            &zone,
            &query("big.example.com", RecordType::A),
            Transport::Udp,
        )
        .expect("an answer");
        let udp = Message::from_vec(&reply).expect("decodes");
        assert!(udp.metadata.truncation);
        assert!(udp.answers.is_empty());
        let reply = respond(
            &zone,
            &query("big.example.com", RecordType::A),
            Transport::Tcp,
        )
        .expect("an answer");
        assert_eq!(
            Message::from_vec(&reply).expect("decodes").answers.len(),
            60
        );
    }

    #[tokio::test]
    async fn serves_tcp_on_the_udp_port() {
        let server = DnsServer::start(zone()).await.expect("server starts");
        let mut stream = TcpStream::connect(server.addr())
            .await
            .expect("TCP connects");
        for _ in 0..2 {
            let q = query("example.com", RecordType::TXT);
            let len = u16::try_from(q.len()).expect("small");
            stream.write_all(&len.to_be_bytes()).await.expect("write");
            stream.write_all(&q).await.expect("write");
            let len = stream.read_u16().await.expect("length");
            let mut reply = vec![0; usize::from(len)];
            stream.read_exact(&mut reply).await.expect("reply");
            let reply = Message::from_vec(&reply).expect("decodes");
            assert_eq!(reply.answers.len(), 1);
            assert_eq!(reply.answers[0].record_type(), RecordType::TXT);
        }
    }
}
