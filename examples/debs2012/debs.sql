-- The DEBS 2012 machine's records as a node receives them: JSON messages on the embedded topic
-- `debs` (`weir replay data.tsv --to debs`, or any connector you add here), with the published
-- field names, `ts` in epoch ms and `ts_ns` in epoch ns. Fields not declared here are kept.
--
-- order = 'arrival': the change detection and correlation of Query 1 take each record as it
-- comes instead of waiting for the next one to move the watermark (the DEBS solutions and the
-- paper's Kafka Streams service do the same). received_at stamps each record with the time the
-- node read it (the paper's mX_rcvts); `weir replay` stamps sent_ns (mX_orgts).
--
-- To run the queries over a recording instead:
--   weir run examples/debs2012/debs.sql examples/debs2012/query1.sql --input debs=FILE.tsv --input-format debs=debs2012
CREATE STREAM debs (ts BIGINT, ts_ns BIGINT, mf01 BIGINT, mf02 BIGINT, mf03 BIGINT,
                    bm05 BIGINT, bm06 BIGINT, bm07 BIGINT, bm08 BIGINT, bm09 BIGINT, bm10 BIGINT,
                    sent_ns BIGINT, rcv_ns BIGINT)
  WITH (timestamp = 'ts', order = 'arrival', received_at = 'rcv_ns');
