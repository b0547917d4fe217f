//! The DNS figure's load: A queries for one name over UDP to a task's embedded resolver at
//! 127.0.0.11:53, from a thread already inside the task's network namespace, with a fixed number
//! in flight, for a fixed time; each answer's latency is kept.
//!
//! The query and the three header fields read back are written by hand rather than with a DNS
//! crate: the benchmark needs one fixed question and an answer's id, response flag, rcode and
//! answer count, and the harness package depends on no DNS crate.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Docker's and shoal's embedded resolver, as a task sees it.
const RESOLVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);
/// A query not answered within this long counts as lost.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one `recv` waits before the loop looks at what to send and what expired.
const RECV_WAIT: Duration = Duration::from_millis(2);

/// What one run of [`query_loop`] saw.
#[derive(Debug, Default)]
pub(crate) struct DnsRun {
    pub(crate) sent: u64,
    /// Answers with rcode NOERROR and at least one record.
    pub(crate) answered: u64,
    /// Answers with another rcode or no record.
    pub(crate) failed: u64,
    /// Queries with no answer within [`QUERY_TIMEOUT`], or refused by the socket (nothing
    /// listening).
    pub(crate) lost: u64,
    /// The latency of each answer, answered or failed, in the order received.
    pub(crate) latencies: Vec<Duration>,
    /// From the first query to the last answer or loss.
    pub(crate) elapsed: Duration,
}

impl DnsRun {
    pub(crate) fn answers_per_second(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency under which `fraction` of the answers came, e.g. 0.99 for p99.
    pub(crate) fn percentile(&self, fraction: f64) -> Duration {
        shoal_tests::figures::percentile(&self.latencies, fraction)
    }
}

/// Sends A queries for `name` to [`RESOLVER`] for `duration`, keeping `in_flight` unanswered at
/// a time, then waits for the last ones. Runs in the calling thread's network namespace.
pub(crate) fn query_loop(name: &str, duration: Duration, in_flight: usize) -> DnsRun {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("binding a UDP socket");
    socket
        .connect(RESOLVER)
        .expect("connecting to 127.0.0.11:53");
    socket
        .set_read_timeout(Some(RECV_WAIT))
        .expect("setting the read timeout");
    let mut run = DnsRun::default();
    let mut outstanding: HashMap<u16, Instant> = HashMap::new();
    let mut next_id: u16 = 0;
    let mut buffer = [0_u8; 1500];
    let started = Instant::now();
    let sending_until = started + duration;
    loop {
        if Instant::now() < sending_until {
            while outstanding.len() < in_flight {
                let id = next_id;
                next_id = next_id.wrapping_add(1);
                if outstanding.contains_key(&id) {
                    continue;
                }
                run.sent += 1;
                match socket.send(&query(id, name)) {
                    Ok(_) => {
                        outstanding.insert(id, Instant::now());
                    }
                    // A connected UDP socket reports an earlier ICMP "port unreachable" here.
                    Err(_) => run.lost += 1,
                }
            }
        } else if outstanding.is_empty() {
            break;
        }
        match socket.recv(&mut buffer) {
            Ok(length) => {
                let Some(answer) = Answer::parse(&buffer[..length]) else {
                    continue;
                };
                let Some(sent_at) = outstanding.remove(&answer.id) else {
                    continue;
                };
                run.latencies.push(sent_at.elapsed());
                if answer.has_records {
                    run.answered += 1;
                } else {
                    run.failed += 1;
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // Refused: nothing listens; the queries in flight wait out their timeout.
            Err(_) => std::thread::sleep(RECV_WAIT),
        }
        outstanding.retain(|_, sent_at| {
            let waiting = sent_at.elapsed() < QUERY_TIMEOUT;
            if !waiting {
                run.lost += 1;
            }
            waiting
        });
    }
    run.elapsed = started.elapsed();
    run
}

/// A standard query with recursion desired for the A record of `name`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(18 + name.len());
    packet.extend(id.to_be_bytes());
    // Flags: RD. Then QDCOUNT 1, ANCOUNT, NSCOUNT, ARCOUNT 0.
    packet.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|label| !label.is_empty()) {
        packet.push(u8::try_from(label.len()).expect("a DNS label is at most 63 bytes"));
        packet.extend(label.as_bytes());
    }
    // The root label, QTYPE A, QCLASS IN.
    packet.extend([0, 0, 1, 0, 1]);
    packet
}

/// The header fields of a response the loop needs.
#[derive(Debug, PartialEq)]
struct Answer {
    id: u16,
    /// NOERROR with at least one answer record.
    has_records: bool,
}

impl Answer {
    /// `None` for anything shorter than a header or not a response.
    fn parse(packet: &[u8]) -> Option<Answer> {
        let header = packet.get(..12)?;
        let is_response = header[2] & 0x80 != 0;
        let rcode = header[3] & 0x0f;
        let answer_count = u16::from_be_bytes([header[6], header[7]]);
        is_response.then_some(Answer {
            id: u16::from_be_bytes([header[0], header[1]]),
            has_records: rcode == 0 && answer_count > 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Answer, query};

    #[test]
    fn a_query_asks_for_the_a_record_of_each_label() {
        assert_eq!(
            query(0x1234, "tasks.web"),
            [
                &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0][..],
                b"\x05tasks\x03web\x00",
                &[0, 1, 0, 1],
            ]
            .concat()
        );
    }

    #[test]
    fn an_answer_counts_only_with_noerror_and_a_record() {
        let response = |flags: [u8; 2], answers: u8| {
            let mut packet = vec![0xab, 0xcd, flags[0], flags[1], 0, 1, 0, answers, 0, 0, 0, 0];
            packet.extend(b"\x03web\x00\x00\x01\x00\x01");
            Answer::parse(&packet)
        };
        let answer = |has_records| {
            Some(Answer {
                id: 0xabcd,
                has_records,
            })
        };
        assert_eq!(response([0x81, 0x80], 1), answer(true));
        assert_eq!(response([0x81, 0x80], 0), answer(false));
        // NXDOMAIN.
        assert_eq!(response([0x81, 0x83], 0), answer(false));
        // A query, not a response.
        assert_eq!(response([0x01, 0x00], 1), None);
        assert_eq!(Answer::parse(&[0xab, 0xcd, 0x81]), None);
    }
}
