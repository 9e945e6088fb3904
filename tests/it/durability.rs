//! Nothing acknowledged is lost when the node process is killed with SIGKILL.

use piazza_client::{ConversationRef, EventStart};
use piazza_protocol::Seq;
use piazza_tests::*;

/// The node binary Cargo builds for these tests (same code as `piazza-node`).
const NODE_BIN: &str = env!("CARGO_BIN_EXE_piazza-test-node");

/// Sends from several concurrent clients, kills the node with SIGKILL right after the acks,
/// restarts it on the same data directory, and checks that every acknowledged message is there with
/// a gap-free sequence that continues where it stopped.
#[tokio::test]
async fn sigkill_after_acks_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::spawn(NODE_BIN, dir.path());
    let mut senders = Vec::new();
    for i in 0..4 {
        let client = node.client(&format!("sender{i}"), EventStart::Off).await;
        senders.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for n in 0..50 {
                let text = format!("s{i}-{n}");
                acks.push((
                    client
                        .send(ConversationRef::Direct { peer: user("sink") }, &text, None)
                        .await
                        .unwrap(),
                    text,
                ));
            }
            acks
        }));
    }
    let mut acked = Vec::new();
    for task in senders {
        acked.extend(task.await.unwrap());
    }
    assert_eq!(acked.len(), 200);
    node.kill9();

    let node = NodeProcess::spawn(NODE_BIN, dir.path());
    let sink = node.client("sink", EventStart::Off).await;
    for i in 0..4 {
        let peer = ConversationRef::Direct {
            peer: user(&format!("sender{i}")),
        };
        let page = sink.history(peer.clone(), None, 100).await.unwrap();
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq.get()).collect();
        assert_eq!(
            seqs,
            (1..=50).collect::<Vec<_>>(),
            "conversation with sender{i} is complete and gap-free"
        );
        for (ack, text) in acked
            .iter()
            .filter(|(a, _)| a.conversation.to_string().contains(&format!("sender{i}")))
        {
            let stored = &page.messages[(ack.seq.get() - 1) as usize];
            assert_eq!(
                piazza_tests::text(stored),
                text,
                "acked message stored at its acked seq"
            );
        }
        let next = sink.send(peer, "after restart", None).await.unwrap();
        assert_eq!(
            next.seq,
            Seq::new(51),
            "the sequence continues without reuse"
        );
    }
    assert_eq!(node.terminate().code(), Some(0), "SIGTERM exits cleanly");
}
