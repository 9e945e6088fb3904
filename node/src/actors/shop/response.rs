//! First-response time: how long a customer waits for staff to answer in their conversation.
//!
//! Pure and bounded: the caller passes every instant, memory is capped ([`CUSTOMERS_MAX`],
//! [`DURATIONS_MAX`]), and the state has its own explicit, versioned byte encoding
//! ([`FirstResponses::encode`]) so the shop actor can persist it. Like every internal state type it
//! is deliberately not `Serialize`.
//!
//! A *wait* starts with a customer's message when none is running and ends with the next staff
//! message to that customer; its length is one first response time. More customer messages during
//! a wait do not restart it: the wait is measured from the first unanswered message.

use std::collections::{BTreeMap, HashMap, VecDeque};

use piazza_protocol::UserId;

/// Most customers tracked at once (seen, with or without a running wait). At about 150 bytes of
/// memory each this is ~15 MB for the busiest shop, and the encoding stays under
/// [`ENCODED_BYTES_MAX`]. When full, the customer who has been quiet longest is forgotten to make
/// room: a wait they had running is dropped unmeasured (it is one of the oldest, and would skew
/// the percentiles anyway), and if they write again they count as a new conversation.
pub(crate) const CUSTOMERS_MAX: usize = 100_000;

/// Most recent first response times kept for the percentiles: enough for a stable p90, small
/// enough to sort on every statistics request.
pub(crate) const DURATIONS_MAX: usize = 10_000;

/// The largest encoding [`FirstResponses::encode`] can produce, which [`FirstResponses::decode`]
/// also accepts at most.
pub(crate) const ENCODED_BYTES_MAX: usize =
    HEADER_BYTES + DURATIONS_MAX * 8 + CUSTOMERS_MAX * CUSTOMER_BYTES_MAX;

/// First response times of one shop's customer conversations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FirstResponses {
    /// Customers tracked, with their place in `recency` and their running wait.
    customers: HashMap<UserId, Customer>,
    /// Customers by last activity (a message from them or to them), least recent first: the
    /// eviction order.
    recency: BTreeMap<u64, UserId>,
    /// The next `recency` key; only grows.
    touch_next: u64,
    /// Customers first seen (each a conversation), including forgotten ones.
    conversations: u64,
    /// Waits running (customers in `customers` with `wait_started_ms`).
    awaiting: u64,
    /// First responses measured, including those no longer in `durations_ms`.
    measured: u64,
    /// The last [`DURATIONS_MAX`] first response times, oldest first.
    durations_ms: VecDeque<u64>,
}

/// What is known about one customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Customer {
    /// Key of the customer in `recency`.
    touch: u64,
    /// When the first message still unanswered was written, if any.
    wait_started_ms: Option<u64>,
}

impl FirstResponses {
    /// An empty tracker.
    pub(crate) fn new() -> Self {
        FirstResponses {
            customers: HashMap::new(),
            recency: BTreeMap::new(),
            touch_next: 0,
            conversations: 0,
            awaiting: 0,
            measured: 0,
            durations_ms: VecDeque::new(),
        }
    }

    /// A customer wrote in their conversation at `at_ms`. Starts a wait if none is running.
    pub(crate) fn customer_message(&mut self, customer: &UserId, at_ms: u64) {
        if !self.customers.contains_key(customer) {
            if self.customers.len() >= CUSTOMERS_MAX {
                self.forget_least_recent();
            }
            self.conversations = self.conversations.saturating_add(1);
            let touch = self.touch();
            self.recency.insert(touch, customer.clone());
            self.customers.insert(
                customer.clone(),
                Customer {
                    touch,
                    wait_started_ms: None,
                },
            );
        } else {
            self.touch_customer(customer);
        }
        if let Some(state) = self.customers.get_mut(customer)
            && state.wait_started_ms.is_none()
        {
            state.wait_started_ms = Some(at_ms);
            self.awaiting += 1;
        }
    }

    /// Staff wrote to `customer` at `at_ms`: ends a running wait, returning its duration in ms
    /// (the first response time; zero if `at_ms` is before the wait started, as with clocks of
    /// two nodes). The caller exports it as a metric. `None` when no wait was running.
    pub(crate) fn staff_message(&mut self, customer: &UserId, at_ms: u64) -> Option<u64> {
        self.touch_customer(customer);
        let state = self.customers.get_mut(customer)?;
        let started_ms = state.wait_started_ms.take()?;
        self.awaiting = self.awaiting.saturating_sub(1);
        let duration_ms = at_ms.saturating_sub(started_ms);
        if self.durations_ms.len() >= DURATIONS_MAX {
            self.durations_ms.pop_front();
        }
        self.durations_ms.push_back(duration_ms);
        self.measured = self.measured.saturating_add(1);
        Some(duration_ms)
    }

    /// Customer conversations seen (a forgotten customer who writes again counts again).
    pub(crate) fn conversations(&self) -> u64 {
        self.conversations
    }

    /// Customers waiting for a first staff answer.
    pub(crate) fn awaiting(&self) -> u64 {
        self.awaiting
    }

    /// First responses measured.
    pub(crate) fn measured(&self) -> u64 {
        self.measured
    }

    /// The `p`th percentile (0..=100) of the last [`DURATIONS_MAX`] first response times, by
    /// nearest rank: the smallest recorded value with at least `p` % of the values at or below it
    /// (`p = 0` gives the smallest). `None` without any measurement or for `p > 100`.
    pub(crate) fn percentile_ms(&self, p: u8) -> Option<u64> {
        if p > 100 || self.durations_ms.is_empty() {
            return None;
        }
        let mut sorted: Vec<u64> = self.durations_ms.iter().copied().collect();
        sorted.sort_unstable();
        let n = sorted.len();
        // rank = ceil(p / 100 × n), at least 1.
        let rank = (usize::from(p) * n).div_ceil(100).max(1);
        sorted.get(rank - 1).copied()
    }

    /// The state as bytes, at most [`ENCODED_BYTES_MAX`]:
    ///
    /// ```text
    /// u8 version (1) · u64 conversations · u64 measured
    /// u32 n · n × u64 duration_ms (oldest first)
    /// u32 m · m × (u8 len · len bytes user · u8 waiting (0|1) · [u64 wait_started_ms])
    ///         (least recently active first)
    /// ```
    ///
    /// Integers are big-endian. Running waits and the eviction order survive a round trip.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(
            HEADER_BYTES
                + self.durations_ms.len() * 8
                + self.customers.len() * CUSTOMER_BYTES_TYPICAL,
        );
        bytes.push(ENCODING_V1);
        bytes.extend_from_slice(&self.conversations.to_be_bytes());
        bytes.extend_from_slice(&self.measured.to_be_bytes());
        // Both lengths are bounded by consts far below u32::MAX.
        bytes.extend_from_slice(&(self.durations_ms.len() as u32).to_be_bytes());
        for duration_ms in &self.durations_ms {
            bytes.extend_from_slice(&duration_ms.to_be_bytes());
        }
        bytes.extend_from_slice(&(self.recency.len() as u32).to_be_bytes());
        for customer in self.recency.values() {
            let wait_started_ms = self
                .customers
                .get(customer)
                .and_then(|state| state.wait_started_ms);
            let name = customer.as_str().as_bytes();
            // A user id is at most USER_NAME_BYTES_MAX (64) bytes.
            bytes.push(name.len() as u8);
            bytes.extend_from_slice(name);
            match wait_started_ms {
                None => bytes.push(0),
                Some(started_ms) => {
                    bytes.push(1);
                    bytes.extend_from_slice(&started_ms.to_be_bytes());
                }
            }
        }
        bytes
    }

    /// Reads what [`FirstResponses::encode`] wrote. Rejects unknown versions, counts over the
    /// limits, invalid or repeated user ids, and trailing bytes, with a reason.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > ENCODED_BYTES_MAX {
            return Err(format!(
                "{} bytes is over the limit of {ENCODED_BYTES_MAX}",
                bytes.len()
            ));
        }
        let mut reader = Reader { rest: bytes };
        let version = reader.u8()?;
        if version != ENCODING_V1 {
            return Err(format!("unknown encoding version {version}"));
        }
        let mut tracker = FirstResponses::new();
        tracker.conversations = reader.u64()?;
        tracker.measured = reader.u64()?;
        let durations_count = reader.count(DURATIONS_MAX, "durations")?;
        tracker.durations_ms = VecDeque::with_capacity(durations_count);
        for _ in 0..durations_count {
            tracker.durations_ms.push_back(reader.u64()?);
        }
        let customers_count = reader.count(CUSTOMERS_MAX, "customers")?;
        for _ in 0..customers_count {
            let len = usize::from(reader.u8()?);
            let name = std::str::from_utf8(reader.take(len)?)
                .map_err(|_| "a user id is not UTF-8".to_owned())?;
            let customer: UserId = name
                .parse()
                .map_err(|e| format!("bad user id {name:?}: {e}"))?;
            let wait_started_ms = match reader.u8()? {
                0 => None,
                1 => Some(reader.u64()?),
                flag => return Err(format!("bad wait flag {flag}")),
            };
            if tracker.customers.contains_key(&customer) {
                return Err(format!("customer {name:?} appears twice"));
            }
            let touch = tracker.touch();
            tracker.recency.insert(touch, customer.clone());
            tracker.customers.insert(
                customer,
                Customer {
                    touch,
                    wait_started_ms,
                },
            );
            if wait_started_ms.is_some() {
                tracker.awaiting += 1;
            }
        }
        if !reader.rest.is_empty() {
            return Err(format!("{} trailing bytes", reader.rest.len()));
        }
        Ok(tracker)
    }

    /// A fresh `recency` key, later than every earlier one.
    fn touch(&mut self) -> u64 {
        let touch = self.touch_next;
        self.touch_next += 1;
        touch
    }

    /// Marks a known customer as the most recently active; nothing for an unknown one.
    fn touch_customer(&mut self, customer: &UserId) {
        let touch = self.touch();
        let Some(state) = self.customers.get_mut(customer) else {
            return;
        };
        self.recency.remove(&state.touch);
        state.touch = touch;
        self.recency.insert(touch, customer.clone());
    }

    /// Forgets the customer who has been quiet longest, with their running wait.
    fn forget_least_recent(&mut self) {
        let Some((_, customer)) = self.recency.pop_first() else {
            return;
        };
        if let Some(state) = self.customers.remove(&customer)
            && state.wait_started_ms.is_some()
        {
            self.awaiting = self.awaiting.saturating_sub(1);
        }
    }
}

impl Default for FirstResponses {
    fn default() -> Self {
        FirstResponses::new()
    }
}

/// A cursor over encoded bytes.
struct Reader<'b> {
    /// What is left to read.
    rest: &'b [u8],
}

impl<'b> Reader<'b> {
    fn take(&mut self, len: usize) -> Result<&'b [u8], String> {
        if self.rest.len() < len {
            return Err("truncated".to_owned());
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        let [byte] = self.take(1)? else {
            return Err("truncated".to_owned());
        };
        Ok(*byte)
    }

    fn u64(&mut self) -> Result<u64, String> {
        let bytes: [u8; 8] = self
            .take(8)?
            .try_into()
            .map_err(|_| "truncated".to_owned())?;
        Ok(u64::from_be_bytes(bytes))
    }

    /// A `u32` count, checked against `max` before anything is allocated for it.
    fn count(&mut self, max: usize, what: &str) -> Result<usize, String> {
        let bytes: [u8; 4] = self
            .take(4)?
            .try_into()
            .map_err(|_| "truncated".to_owned())?;
        let count = u32::from_be_bytes(bytes) as usize;
        if count > max {
            return Err(format!("{count} {what} is over the limit of {max}"));
        }
        Ok(count)
    }
}

/// Format byte of the encoding.
const ENCODING_V1: u8 = 1;
/// Version, two counters and two counts.
const HEADER_BYTES: usize = 1 + 8 + 8 + 4 + 4;
/// Length byte, the longest user id, wait flag and start.
const CUSTOMER_BYTES_MAX: usize = 1 + piazza_protocol::limits::USER_NAME_BYTES_MAX + 1 + 8;
/// A guess for preallocation only.
const CUSTOMER_BYTES_TYPICAL: usize = 24;

// The encoding writes a user id's length in one byte and the counts in four.
const _: () = assert!(piazza_protocol::limits::USER_NAME_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(CUSTOMERS_MAX <= u32::MAX as usize);
const _: () = assert!(DURATIONS_MAX <= u32::MAX as usize);

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        name.parse().unwrap()
    }

    #[test]
    fn wait_and_answer() {
        let mut tracker = FirstResponses::new();
        let ada = user("ada");
        tracker.customer_message(&ada, 1_000);
        assert_eq!((tracker.conversations(), tracker.awaiting()), (1, 1));
        assert_eq!(tracker.staff_message(&ada, 61_000), Some(60_000));
        assert_eq!(tracker.awaiting(), 0);
        assert_eq!(tracker.measured(), 1);
        // A second exchange in the same conversation is measured again, not a new conversation.
        tracker.customer_message(&ada, 100_000);
        assert_eq!(tracker.staff_message(&ada, 105_000), Some(5_000));
        assert_eq!(
            (
                tracker.conversations(),
                tracker.awaiting(),
                tracker.measured()
            ),
            (1, 0, 2)
        );
    }

    #[test]
    fn two_customer_messages_then_one_answer_count_once_from_the_first() {
        let mut tracker = FirstResponses::new();
        let ada = user("ada");
        tracker.customer_message(&ada, 1_000);
        tracker.customer_message(&ada, 30_000);
        assert_eq!(tracker.awaiting(), 1);
        assert_eq!(tracker.staff_message(&ada, 41_000), Some(40_000));
        // A second staff message right after measures nothing.
        assert_eq!(tracker.staff_message(&ada, 42_000), None);
        assert_eq!(tracker.measured(), 1);
    }

    #[test]
    fn answer_without_wait_is_none() {
        let mut tracker = FirstResponses::new();
        let ada = user("ada");
        assert_eq!(tracker.staff_message(&ada, 1_000), None);
        assert_eq!(
            (
                tracker.conversations(),
                tracker.awaiting(),
                tracker.measured()
            ),
            (0, 0, 0)
        );
        // Staff writing first does not start a wait for the customer's later message to end.
        tracker.customer_message(&ada, 2_000);
        assert_eq!(tracker.awaiting(), 1);
        // A staff clock behind the customer's gives zero, not an underflow.
        assert_eq!(tracker.staff_message(&ada, 1_500), Some(0));
    }

    #[test]
    fn waits_of_several_customers_are_independent() {
        let mut tracker = FirstResponses::new();
        let (ada, bob) = (user("ada"), user("bob"));
        tracker.customer_message(&ada, 0);
        tracker.customer_message(&bob, 10);
        assert_eq!((tracker.conversations(), tracker.awaiting()), (2, 2));
        assert_eq!(tracker.staff_message(&bob, 110), Some(100));
        assert_eq!(tracker.awaiting(), 1);
        assert_eq!(tracker.staff_message(&ada, 1_000), Some(1_000));
    }

    #[test]
    fn percentiles() {
        let mut tracker = FirstResponses::new();
        assert_eq!(tracker.percentile_ms(50), None);
        // Durations 1..=10 s, recorded out of order.
        for (idx, seconds) in [7u64, 3, 10, 1, 5, 2, 9, 4, 8, 6].into_iter().enumerate() {
            let customer = user(&format!("c{idx}"));
            tracker.customer_message(&customer, 0);
            tracker.staff_message(&customer, seconds * 1000);
        }
        assert_eq!(tracker.percentile_ms(0), Some(1_000));
        assert_eq!(tracker.percentile_ms(10), Some(1_000));
        assert_eq!(tracker.percentile_ms(11), Some(2_000));
        assert_eq!(tracker.percentile_ms(50), Some(5_000));
        assert_eq!(tracker.percentile_ms(90), Some(9_000));
        assert_eq!(tracker.percentile_ms(91), Some(10_000));
        assert_eq!(tracker.percentile_ms(100), Some(10_000));
        assert_eq!(tracker.percentile_ms(101), None);

        let mut single = FirstResponses::new();
        single.customer_message(&user("ada"), 0);
        single.staff_message(&user("ada"), 42);
        assert_eq!(single.percentile_ms(50), Some(42));
        assert_eq!(single.percentile_ms(90), Some(42));
    }

    #[test]
    fn durations_ring_keeps_the_last_ones() {
        // DURATIONS_MAX answers of 1 ms, then one of 1 s: the oldest 1 ms falls out, p100 sees
        // the new one, and `measured` keeps counting.
        let mut tracker = FirstResponses::new();
        let ada = user("ada");
        for idx in 0..DURATIONS_MAX as u64 {
            tracker.customer_message(&ada, idx * 10);
            tracker.staff_message(&ada, idx * 10 + 1);
        }
        assert_eq!(tracker.durations_ms.len(), DURATIONS_MAX);
        assert_eq!(tracker.percentile_ms(100), Some(1));
        tracker.customer_message(&ada, 1_000_000);
        tracker.staff_message(&ada, 1_001_000);
        assert_eq!(tracker.durations_ms.len(), DURATIONS_MAX);
        assert_eq!(tracker.percentile_ms(100), Some(1_000));
        assert_eq!(tracker.measured(), DURATIONS_MAX as u64 + 1);
    }

    #[test]
    fn bound_forgets_the_least_recent_customer() {
        // CUSTOMERS_MAX customers each start a wait; the first one then writes again, so the
        // second is the quietest. Customer CUSTOMERS_MAX + 1 makes the second one forgotten with
        // its wait.
        let mut tracker = FirstResponses::new();
        let customers: Vec<UserId> = (0..CUSTOMERS_MAX)
            .map(|idx| user(&format!("c{idx}")))
            .collect();
        for (idx, customer) in customers.iter().enumerate() {
            tracker.customer_message(customer, idx as u64);
        }
        assert_eq!(tracker.awaiting(), CUSTOMERS_MAX as u64);
        tracker.customer_message(&customers[0], 1_000_000);
        let newcomer = user("newcomer");
        tracker.customer_message(&newcomer, 1_000_001);
        assert_eq!(tracker.customers.len(), CUSTOMERS_MAX);
        assert_eq!(tracker.recency.len(), CUSTOMERS_MAX);
        assert_eq!(tracker.conversations(), CUSTOMERS_MAX as u64 + 1);
        assert_eq!(tracker.awaiting(), CUSTOMERS_MAX as u64);
        assert_eq!(tracker.staff_message(&customers[1], 2_000_000), None);
        assert_eq!(
            tracker.staff_message(&customers[0], 2_000_000),
            Some(2_000_000)
        );
        assert_eq!(tracker.staff_message(&newcomer, 2_000_000), Some(999_999));
        // The forgotten customer writing again is a new conversation.
        tracker.customer_message(&customers[1], 3_000_000);
        assert_eq!(tracker.conversations(), CUSTOMERS_MAX as u64 + 2);

        // Its encoding is within the limit and decodes.
        let bytes = tracker.encode();
        assert!(bytes.len() <= ENCODED_BYTES_MAX);
        assert_eq!(
            FirstResponses::decode(&bytes).unwrap().awaiting(),
            tracker.awaiting()
        );
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut tracker = FirstResponses::new();
        let (ada, bob, eve) = (user("ada"), user("bob"), user("eve.s-1_x"));
        tracker.customer_message(&ada, 10);
        tracker.customer_message(&bob, 20);
        tracker.customer_message(&eve, 30);
        tracker.staff_message(&bob, 500);
        tracker.customer_message(&ada, 600);

        let empty = FirstResponses::new();
        assert_eq!(FirstResponses::decode(&empty.encode()).unwrap(), empty);

        let mut decoded = FirstResponses::decode(&tracker.encode()).unwrap();
        assert_eq!(decoded.conversations(), 3);
        assert_eq!(decoded.awaiting(), 2);
        assert_eq!(decoded.measured(), 1);
        assert_eq!(decoded.percentile_ms(50), Some(480));
        assert_eq!(decoded.encode(), tracker.encode());
        // Running waits survive: ada's is still measured from her first message.
        assert_eq!(decoded.staff_message(&ada, 1_010), Some(1_000));
        assert_eq!(decoded.staff_message(&eve, 1_030), Some(1_000));
        assert_eq!(decoded.staff_message(&bob, 1_030), None);
        // So does the eviction order: eve (quiet since 30), then bob (answered at 500), then ada
        // (wrote at 600).
        let decoded = FirstResponses::decode(&tracker.encode()).unwrap();
        let order: Vec<&str> = decoded.recency.values().map(UserId::as_str).collect();
        assert_eq!(order, ["eve.s-1_x", "bob", "ada"]);
    }

    #[test]
    fn decode_rejects_bad_input() {
        let mut tracker = FirstResponses::new();
        tracker.customer_message(&user("ada"), 10);
        let good = tracker.encode();

        let mut bad_version = good.clone();
        bad_version[0] = 2;
        let mut trailing = good.clone();
        trailing.push(0);
        let mut bad_user = good.clone();
        // The user id starts after the header's 1 + 8 + 8 + 4 + 4 bytes and its length byte.
        bad_user[HEADER_BYTES + 1] = b'A';
        let mut bad_flag = good.clone();
        bad_flag[HEADER_BYTES + 1 + 3] = 7;
        let mut too_many = good.clone();
        too_many[17..21].copy_from_slice(&(DURATIONS_MAX as u32 + 1).to_be_bytes());
        let mut twice = FirstResponses::new().encode();
        twice[21..25].copy_from_slice(&2u32.to_be_bytes());
        for _ in 0..2 {
            twice.extend_from_slice(&[3, b'a', b'd', b'a', 0]);
        }
        for (name, bytes) in [
            ("empty", Vec::new()),
            ("version", bad_version),
            ("truncated", good[..good.len() - 1].to_vec()),
            ("trailing", trailing),
            ("user", bad_user),
            ("flag", bad_flag),
            ("limit", too_many),
            ("twice", twice),
            ("oversized", vec![0; ENCODED_BYTES_MAX + 1]),
        ] {
            assert!(FirstResponses::decode(&bytes).is_err(), "{name}");
        }
    }
}
