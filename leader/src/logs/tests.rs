use proptest::prelude::*;

use super::*;

fn chunk(seq: u64, s: &str) -> LogChunk {
    raw(seq, LogStream::Stdout, s.as_bytes().to_vec())
}

fn raw(seq: u64, stream: LogStream, data: Vec<u8>) -> LogChunk {
    LogChunk {
        seq,
        stream: stream as i32,
        data,
        time: None,
    }
}

async fn store() -> (tempfile::TempDir, JobStore) {
    let dir = tempfile::tempdir().expect("tmp");
    let store = JobStore::open(&toil_jobstore::Locator::File(dir.path().join("js")))
        .await
        .expect("open");
    store.initialize().await.expect("init");
    (dir, store)
}

fn through(hub: &LogHub, id: &str, c: LogChunk) -> u64 {
    hub.push(id, c).expect("taken").through
}

#[tokio::test]
async fn chunks_are_ordered_persisted_and_followed_without_gaps() {
    let (_dir, store) = store().await;
    let (tx, mut rx) = mpsc::channel(16);
    let hub = LogHub::new(store.clone(), Some(tx));
    hub.open("a.1", "a", 1);
    assert_eq!(through(&hub, "a.1", chunk(1, "world\n")), 0, "gap");
    assert_eq!(through(&hub, "a.1", chunk(0, "hello ")), 2);
    assert_eq!(through(&hub, "a.1", chunk(0, "hello ")), 2, "duplicate");
    let line = rx.try_recv().expect("echoed");
    assert_eq!(
        (line.job_id.as_str(), line.text.as_str()),
        ("a", "hello world\n")
    );

    // A follower that joins now sees the buffered part, then live data.
    let start = hub.follow_start("a.1", true).expect("live");
    assert_eq!(
        (start.persisted, &start.buffered[..]),
        (0, &b"hello world\n"[..])
    );
    let mut live = start.live.expect("live");
    through(&hub, "a.1", chunk(2, "bye"));
    let c = live.recv().await.expect("live chunk");
    assert_eq!((c.offset, &c.data[..]), (12, &b"bye"[..]));

    hub.end("a.1", Some(3));
    hub.flush(false).await;
    assert!(
        hub.follow_start("a.1", false).is_none(),
        "forgotten once persisted"
    );
    let parts = read_persisted(&store, "a", 1, 6, u64::MAX)
        .await
        .expect("read");
    let text: Vec<u8> = parts.iter().flat_map(|(_, b)| b.to_vec()).collect();
    assert_eq!(text, b"world\nbye");
    assert_eq!(hub.tail("a", 1, 4).await, "\nbye");
    let last = rx.try_recv().expect("partial line echoed at end");
    assert_eq!(last.lines().collect::<Vec<_>>(), ["bye"]);
    // A chunk after the log is forgotten is acknowledged and ignored.
    assert_eq!(through(&hub, "a.1", chunk(3, "late")), 4);
}

#[tokio::test]
async fn chunks_far_ahead_are_refused_with_the_window() {
    let (_dir, store) = store().await;
    let hub = LogHub::new(store, None);
    hub.open("a.1", "a", 1);
    through(&hub, "a.1", chunk(0, "x"));
    let err = hub
        .push("a.1", chunk(2 + AHEAD_WINDOW, "far"))
        .expect_err("past the window");
    assert_eq!(
        err,
        PushError::TooFarAhead {
            seq: 2 + AHEAD_WINDOW,
            next: 1,
            window: AHEAD_WINDOW
        }
    );
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert!(status.message().contains("256 chunks ahead"), "{status:?}");
    let err = hub.push("a.1", chunk(u64::MAX, "far")).expect_err("far");
    assert!(matches!(err, PushError::TooFarAhead { .. }));

    // Within the window, held bytes are capped.
    let big = vec![b'z'; AHEAD_BYTES / 2];
    through(&hub, "a.1", raw(2, LogStream::Stdout, big.clone()));
    through(&hub, "a.1", raw(3, LogStream::Stdout, big.clone()));
    let err = hub
        .push("a.1", raw(4, LogStream::Stdout, vec![b'z']))
        .expect_err("held bytes over the cap");
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::ResourceExhausted
    );
    // A duplicate of a held chunk costs nothing more; the missing chunk
    // lets everything through.
    through(&hub, "a.1", raw(3, LogStream::Stdout, big));
    let p = hub.push("a.1", chunk(1, "y")).expect("the missing one");
    assert_eq!(p.through, 4);
    assert_eq!(p.backlog, 2 + AHEAD_BYTES);
}

#[tokio::test]
async fn the_log_stops_at_the_limit_with_a_note_and_counts_the_rest() {
    let (_dir, store) = store().await;
    let (tx, mut rx) = mpsc::channel(64);
    let hub = LogHub::with_max_bytes_per_attempt(store.clone(), Some(tx), 10);
    hub.open("a.1", "a", 1);
    through(&hub, "a.1", chunk(0, "12345678"));
    through(&hub, "a.1", chunk(1, "9abcdef"));
    through(&hub, "a.1", chunk(2, "ghij\n"));
    hub.end("a.1", Some(3));
    hub.flush(false).await;
    let parts = read_persisted(&store, "a", 1, 0, u64::MAX)
        .await
        .expect("read");
    let text: Vec<u8> = parts.iter().flat_map(|(_, b)| b.to_vec()).collect();
    let text = String::from_utf8(text).expect("utf-8");
    assert!(text.starts_with("123456789a\n[toil-leader] this attempt's log reached the limit of 10 B (--maxLogBytesPerAttempt)"), "{text}");
    assert!(
        text.ends_with("[toil-leader] 10 byte(s) of output past the limit were dropped\n"),
        "{text}"
    );
    let mut echoed = String::new();
    while let Ok(l) = rx.try_recv() {
        echoed.push_str(&l.text);
    }
    assert_eq!(echoed, text, "the terminal sees what is stored");
}

#[tokio::test]
async fn a_flood_without_newlines_is_echoed_in_pieces_and_holds_one_piece() {
    let (_dir, store) = store().await;
    let (tx, mut rx) = mpsc::channel(1024);
    let hub = LogHub::new(store, Some(tx));
    hub.open("a.1", "a", 1);
    // 8 MiB in 32 KiB chunks, as an agent sends them.
    let piece = vec![b'x'; 32 << 10];
    for seq in 0..256 {
        through(&hub, "a.1", raw(seq, LogStream::Stdout, piece.clone()));
        hub.flush(true).await;
    }
    let mut n = 0;
    while let Ok(l) = rx.try_recv() {
        for line in l.lines() {
            assert_eq!(line.len(), LINE_PIECE_MAX);
            n += 1;
        }
    }
    // The last piece waits for more (or the end).
    assert_eq!(n, (8 << 20) / LINE_PIECE_MAX - 1);
    hub.end("a.1", Some(256));
    let last = rx.try_recv().expect("the rest at the end");
    assert_eq!(last.text.len(), LINE_PIECE_MAX + 1);
}

#[tokio::test]
async fn a_stream_waits_for_room_while_the_store_is_behind() {
    let (_dir, store) = store().await;
    let hub = LogHub::new(store, None);
    hub.open("a.1", "a", 1);
    let big = vec![b'q'; BACKLOG_HIGH];
    let p = hub
        .push("a.1", raw(0, LogStream::Stdout, big))
        .expect("taken");
    assert!(p.backlog >= BACKLOG_HIGH);
    let waiting = {
        let hub = hub.clone();
        tokio::spawn(async move { hub.wait_for_room("a.1").await })
    };
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "waits while the backlog is high");
    hub.flush(true).await;
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("room after a flush")
        .expect("joined");
    assert_eq!(
        hub.follow_start("a.1", false).map(|s| s.persisted),
        Some(BACKLOG_HIGH as u64)
    );
}

/// What the terminal should show for `data` from one stream: each line,
/// in pieces of at most `LINE_PIECE_MAX`, the unterminated end included.
fn expected_echo(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for line in lines {
        if line.is_empty() {
            out.push(Vec::new());
        }
        for piece in line.chunks(LINE_PIECE_MAX) {
            out.push(piece.to_vec());
        }
    }
    out
}

/// Output made of runs: short text with newlines, and long runs without.
fn output() -> impl Strategy<Value = Vec<u8>> {
    let run = prop_oneof![
        proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), any::<u8>()], 0..64),
        (1usize..(3 * LINE_PIECE_MAX), any::<u8>()).prop_map(|(n, b)| vec![
            if b == b'\n' {
                b'-'
            } else {
                b
            };
            n
        ]),
        Just(b"\n".to_vec()),
    ];
    proptest::collection::vec(run, 0..8).prop_map(|runs| runs.concat())
}

proptest! {
    // A few hundred KiB per case: about two seconds on a 2-core machine.
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Chunks delivered in any order and any number of times, within the
    /// window, reassemble to the bytes sent; the echo is those bytes' lines
    /// in pieces of at most 64 KiB; a chunk past the window is refused.
    #[test]
    fn any_delivery_within_the_window_reassembles_the_output(
        data in output(),
        cuts in proptest::collection::vec(1usize..40_000, 1..64),
        picks in proptest::collection::vec((0u64..8, any::<bool>()), 0..200),
        stderr in proptest::collection::vec(any::<bool>(), 64),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let (_dir, store) = rt.block_on(store());
        let (tx, mut rx) = mpsc::channel(1 << 16);
        let hub = LogHub::new(store, Some(tx));
        hub.open("j.1", "j", 1);
        // Cut the output into chunks.
        let mut chunks = Vec::new();
        let mut rest = &data[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            let stream = if stderr[i % stderr.len()] { LogStream::Stderr } else { LogStream::Stdout };
            chunks.push(raw(i as u64, stream, rest[..n].to_vec()));
            rest = &rest[n..];
            i += 1;
        }
        let n = chunks.len() as u64;
        // Deliver: each pick sends a chunk near the next expected one, or a
        // duplicate of one already taken; then everything in order.
        let mut next = 0u64;
        for (ahead, dup) in picks {
            let seq = if dup && next > 0 { next - 1 - ahead.min(next - 1) } else { next + ahead };
            if seq >= n {
                continue;
            }
            let p = hub.push("j.1", chunks[seq as usize].clone()).expect("within the window");
            prop_assert!(p.through >= next, "acknowledgements never go back");
            next = p.through;
        }
        let far = hub.push("j.1", raw(next + AHEAD_WINDOW + 1, LogStream::Stdout, b"x".to_vec()));
        let far_refused = matches!(far, Err(PushError::TooFarAhead { .. }));
        prop_assert!(far_refused);
        for c in &chunks {
            next = hub.push("j.1", c.clone()).expect("in order").through;
        }
        prop_assert_eq!(next, n);
        hub.end("j.1", Some(n));
        let start = hub.follow_start("j.1", false).expect("held");
        prop_assert_eq!(start.persisted, 0);
        prop_assert_eq!(&start.buffered[..], &data[..]);

        // The echo, per stream.
        let mut echoed: [Vec<Vec<u8>>; 2] = Default::default();
        while let Ok(l) = rx.try_recv() {
            for line in l.lines() {
                // Bytes that are not UTF-8 are shown as U+FFFD, one
                // character for each, so count characters.
                prop_assert!(line.chars().count() <= LINE_PIECE_MAX);
                echoed[usize::from(l.stderr)].push(line.as_bytes().to_vec());
            }
        }
        for (k, want_stderr) in [false, true].into_iter().enumerate() {
            let sent: Vec<u8> = chunks
                .iter()
                .filter(|c| (c.stream == LogStream::Stderr as i32) == want_stderr)
                .flat_map(|c| c.data.clone())
                .collect();
            let want: Vec<Vec<u8>> = expected_echo(&sent)
                .into_iter()
                .map(|l| String::from_utf8_lossy(&l).into_owned().into_bytes())
                .collect();
            // Pieces cut inside a multi-byte character are shown with a
            // replacement character, so compare lossily.
            if sent.is_ascii() {
                prop_assert_eq!(&echoed[k], &want);
            } else {
                prop_assert_eq!(echoed[k].len(), want.len());
            }
        }
    }
}
