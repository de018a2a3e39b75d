CREATE STREAM orders (order_id BIGINT, ts BIGINT, amount DOUBLE) WITH (timestamp = 'ts', watermark = '1 second');
CREATE STREAM payments (order_id BIGINT, ts BIGINT, paid DOUBLE) WITH (timestamp = 'ts', watermark = '1 second');

-- Paid orders per 10 s by the time each order was placed, and by the time it was paid: the
-- window's time column decides which time a joined row has.
INSERT INTO by_order_time
SELECT window_start, count(*) AS orders, sum(p.paid) AS paid
FROM orders AS o JOIN payments AS p
  ON o.order_id = p.order_id AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '8' SECOND
GROUP BY TUMBLE(o.ts, INTERVAL '10' SECOND);

INSERT INTO by_payment_time
SELECT window_start, count(*) AS orders, sum(p.paid) AS paid
FROM orders AS o JOIN payments AS p
  ON o.order_id = p.order_id AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '8' SECOND
GROUP BY TUMBLE(p.ts, INTERVAL '10' SECOND);
