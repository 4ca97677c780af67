//! Publishing: `send_each` enqueues a batch, waits until the broker acknowledged or
//! refused every message, and says which, telling a refusal for good (the message can
//! never be published as it is: too large, invalid) from one worth retrying.
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};

use crate::{config, Error, Result};

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// The partition to write to; `None`: the key's, by Kafka's default partitioner
    /// (murmur2, as the Java client and the contract choose it).
    pub partition: Option<i32>,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// Worth retrying (the broker is away, a timeout, a leader moving).
    Transient(String),
    /// Refused for good: publishing it again can only fail again.
    Permanent(String),
}

#[derive(Default)]
struct DeliveryContext {
    /// `(message index, error)` of each failed delivery of the batch in flight.
    failures: Mutex<Vec<(usize, KafkaError)>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        if let Err((e, _)) = result {
            self.failures.lock().expect("not poisoned").push((index, e.clone()));
        }
    }
}

/// Whether a failure is the message's own and would repeat.
fn delivery_of(e: &KafkaError) -> Delivery {
    use RDKafkaErrorCode as C;
    let permanent = matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::MessageBatchTooLarge
                | C::InvalidRecord
                | C::InvalidDifferentRecord
                | C::InvalidTopic
                | C::PolicyViolation
        )
    );
    if permanent {
        Delivery::Permanent(e.to_string())
    } else {
        Delivery::Transient(e.to_string())
    }
}

/// How long a batch may wait for its acknowledgements before they count as failed for now.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Publishes and waits for every delivery.
pub struct Producer {
    inner: BaseProducer<DeliveryContext>,
}

impl Producer {
    pub fn new(brokers: &str) -> Result<Producer> {
        // murmur2, as Apache Kafka's Java client partitions by default (the contract):
        // librdkafka's own default (CRC32) would put a team in another partition.
        let settings = [
            ("acks", "all".to_string()),
            ("linger.ms", "5".into()),
            ("message.timeout.ms", "30000".into()),
            ("partitioner", "murmur2_random".into()),
        ];
        let inner = config::client(brokers, &settings, true).create_with_context(DeliveryContext::default())?;
        Ok(Producer { inner })
    }

    /// Sends every message; returns, in order, what became of each.
    pub fn send_each(&self, messages: &[Outgoing]) -> Vec<Delivery> {
        self.inner.context().failures.lock().expect("not poisoned").clear();
        let mut out = vec![Delivery::Sent; messages.len()];
        for (i, m) in messages.iter().enumerate() {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &m.headers {
                headers = headers.insert(Header { key: k, value: Some(v.as_bytes()) });
            }
            let mut record = BaseRecord::with_opaque_to(&m.topic, i).key(&m.key).payload(&m.payload).headers(headers);
            if let Some(partition) = m.partition {
                record = record.partition(partition);
            }
            loop {
                match self.inner.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        self.inner.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => {
                        out[i] = delivery_of(&e);
                        break;
                    }
                }
            }
        }
        if let Err(e) = self.wait_for_deliveries(FLUSH_TIMEOUT) {
            // Whatever is still queued was not acknowledged: worth retrying.
            for d in out.iter_mut().filter(|d| **d == Delivery::Sent) {
                *d = Delivery::Transient(e.clone());
            }
        }
        for (i, e) in self.inner.context().failures.lock().expect("not poisoned").drain(..) {
            out[i] = delivery_of(&e);
        }
        out
    }

    /// Serves delivery reports until none is outstanding. rdkafka's own `flush` polls in
    /// steps of 100 ms that last their whole step, so every publish took ≥ 100 ms; here
    /// the wait ends within a millisecond of the last acknowledgement.
    fn wait_for_deliveries(&self, timeout: Duration) -> std::result::Result<(), String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.inner.poll(Duration::from_millis(1));
            let outstanding = self.inner.in_flight_count();
            if outstanding == 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!("{outstanding} message(s) not acknowledged within {timeout:?}"));
            }
        }
    }

    /// Sends every message; fails unless each was acknowledged.
    pub fn send_all(&self, messages: &[Outgoing]) -> Result<()> {
        let failed: Vec<String> = self
            .send_each(messages)
            .into_iter()
            .filter_map(|d| match d {
                Delivery::Sent => None,
                Delivery::Transient(e) | Delivery::Permanent(e) => Some(e),
            })
            .collect();
        match failed.first() {
            None => Ok(()),
            Some(first) => Err(Error::Delivery { failed: failed.len(), total: messages.len(), first: first.clone() }),
        }
    }
}
