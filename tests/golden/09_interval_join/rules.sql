CREATE STREAM orders (order_id BIGINT, ts BIGINT, amount DOUBLE) WITH (timestamp = 'ts', watermark = '1 second');
CREATE STREAM payments (order_id BIGINT, ts BIGINT, paid DOUBLE) WITH (timestamp = 'ts', watermark = '1 second');

-- A payment matches an order with the same id made at most 5 s before it.
INSERT INTO paid_orders
SELECT o.order_id, o.amount, p.paid, p.ts - o.ts AS delay_ms
FROM orders AS o
JOIN payments AS p
  ON o.order_id = p.order_id
 AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '5' SECOND;
