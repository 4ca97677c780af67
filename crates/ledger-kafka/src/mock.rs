//! librdkafka's mock cluster as a broker for tests (feature `mock`): real Kafka-protocol
//! listeners on loopback, a group coordinator that expires a silent member after its
//! session timeout (tansu 0.6 does not), and partitions that keep only their last 5 MiB
//! (a real trimmed log). Never where data must survive.
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::Result;

pub struct MockBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl MockBroker {
    pub fn start() -> Result<MockBroker> {
        Ok(MockBroker { cluster: MockCluster::new(1)? })
    }

    /// `host:port` of its listener.
    pub fn address(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        Ok(self.cluster.create_topic(topic, partitions, 1)?)
    }
}
