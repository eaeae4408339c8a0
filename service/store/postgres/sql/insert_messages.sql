-- Stores a whole group commit's messages (of one tenant) in one statement
-- and fans each out to every subscription of its topic. Arrays, one element
-- per message, in publish order: $1 topic, $2 ttl ms (NULL: the topic's),
-- $3 deliver_at in µs since the Unix epoch (NULL: now), $4 priority,
-- $5 correlation id, $6 ordering key, $7 idempotency key, $8 size,
-- $9 sha256, $10 inline payload, $14 uploaded payload id (NULL: inline);
-- $13 how many attributes each has; their keys and values are the
-- messages' slices, in order, of $11 and $12. $15: the messages were
-- published before (dead letters, redriven ones), so the topic's size
-- limit does not refuse them now. $16-$21: idle streams' credit, one
-- element per offered subscription (store::PublishStore::PublishBatch):
-- subscription, lease token, ack deadline ms, messages, bytes, whether the
-- first may exceed the bytes; the deliveries they take are inserted leased
-- (`handed`), as claim.sql would lease them, so they need no claim.
--
-- Returns first (id, topic, published_at, expires_at, NULL, NULL) of the
-- new messages; ids ascend in publish order (rows are inserted in `ord`
-- order and the identity increases). Messages of a topic that does not
-- exist are not inserted, so their topic is missing. Then (message id,
-- NULL, NULL, NULL, subscription, lease expiry) for each delivery of an
-- offered subscription that is leased or ready (lease expiry NULL: one the
-- offer could not take). An oversize message or a bad payload handle
-- raises (see migrations).
--
-- This is the one statement that inserts messages (dead-lettering and
-- redrive take rows, then publish them here), so it also does what every
-- stored message owes: the published counter of each topic and the
-- tenant's stored-bytes ledger with its quota (`counted`, `charged`; were
-- two statement triggers, migration 0018), and the fan-out (`fan_out`).
WITH input AS (
  SELECT i.*, (sum(i.attr_count) OVER (ORDER BY i.ord))::int AS attr_end
  FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int4[], $5::text[],
    $6::text[], $7::text[], $8::int8[], $9::bytea[], $10::bytea[], $13::int8[],
    $14::int8[])
    WITH ORDINALITY AS i(topic, ttl_ms, deliver_us, priority, correlation_id,
      ordering_key, idempotency_key, size, sha256, payload, attr_count, payload_id,
      ord)),
src AS (
  SELECT i.*, t.tenant_id, t.retention, coalesce(t.message_ttl, t.retention) AS ttl,
    t.max_message_bytes,
    CASE WHEN i.payload_id IS NULL THEN i.size
      WHEN p.id IS NULL THEN pgbus.reject_handle(i.payload_id)
      ELSE p.size END AS real_size,
    coalesce(p.sha256, i.sha256) AS real_sha256
  FROM input i
  -- Each message's topic by its key. As a plain join the planner may read
  -- every topic of the tenant and filter them by name (a generic plan made
  -- while the tenant had few topics); LIMIT keeps a subquery a probe.
  JOIN LATERAL (
    SELECT t1.tenant_id, t1.name, t1.retention, t1.message_ttl, t1.max_message_bytes
    FROM pgbus.topics t1
    WHERE t1.tenant_id = (SELECT current_setting('pgbus.tenant_id', true))
      AND t1.name = i.topic
    LIMIT 1) t ON true
  -- Its uploaded payload, by key too (as a join, planned while payloads
  -- was empty, it read every upload without a message, of every tenant).
  LEFT JOIN LATERAL (
    SELECT p1.id, p1.size, p1.sha256 FROM pgbus.payloads p1
    WHERE p1.tenant_id = t.tenant_id AND p1.id = i.payload_id
      AND p1.topic = t.name AND p1.state = 'complete' AND p1.message_id IS NULL
    LIMIT 1) p ON true),
m AS (
  INSERT INTO pgbus.messages (tenant_id, topic, expires_at, deliver_at, priority,
    correlation_id, ordering_key, idempotency_key, attributes, size, sha256, payload,
    payload_id)
  SELECT src.tenant_id, src.topic,
    now() + least(coalesce(src.ttl_ms * interval '1 millisecond', src.ttl), src.retention),
    'epoch'::timestamptz + src.deliver_us * interval '1 microsecond',
    src.priority, src.correlation_id, src.ordering_key, src.idempotency_key,
    -- Each message's attributes are its slice of the key and value arrays
    -- (a join to them grouped by message became a nested loop over all of
    -- them per message: quadratic in the group commit's size).
    CASE WHEN src.attr_count > 0 THEN
      jsonb_object(($11::text[])[src.attr_end - src.attr_count + 1 : src.attr_end],
                   ($12::text[])[src.attr_end - src.attr_count + 1 : src.attr_end])
      ELSE '{}'::jsonb END,
    CASE WHEN NOT $15::bool AND src.max_message_bytes > 0
        AND src.real_size > src.max_message_bytes
      THEN pgbus.reject_oversize(src.topic, src.real_size, src.max_message_bytes)
      ELSE src.real_size END,
    src.real_sha256, src.payload, src.payload_id
  FROM src
  ORDER BY src.ord
  RETURNING tenant_id, id, topic, priority, size, published_at, deliver_at,
    expires_at, payload_id, ordering_key, idempotency_key, attributes),
k AS (
  UPDATE pgbus.idempotency_keys ik SET message_id = m.id FROM m
  WHERE m.idempotency_key IS NOT NULL
    AND ik.tenant_id = m.tenant_id AND ik.topic = m.topic AND ik.key = m.idempotency_key),
u AS (
  -- The payload takes its message's expiry: the reaper may delete only
  -- what expired (migration 0019).
  UPDATE pgbus.payloads p SET message_id = m.id, expires_at = m.expires_at FROM m
  WHERE m.payload_id IS NOT NULL AND p.tenant_id = m.tenant_id AND p.id = m.payload_id),
-- The published counter of each topic, and the tenant's stored-bytes
-- ledger (payloads stored inline count; an uploaded one was counted by its
-- chunks) with the quota: when the tenant has max_stored_bytes and what is
-- stored plus this statement's bytes exceeds it, the statement fails with
-- SQLSTATE 54000 and stores nothing.
counted AS (
  INSERT INTO pgbus.counters (tenant_id, topic, published)
  SELECT m.tenant_id, m.topic, count(*) FROM m GROUP BY m.tenant_id, m.topic),
charged AS (
  INSERT INTO pgbus.tenant_usage (tenant_id, bytes)
  SELECT c.tenant_id, CASE WHEN c.bytes + s.used > t.max_stored_bytes
    THEN pgbus.reject_stored_bytes(t.max_stored_bytes, s.used, c.bytes)
    ELSE c.bytes END
  FROM (SELECT m.tenant_id,
      (sum(m.size) FILTER (WHERE m.payload_id IS NULL))::bigint AS bytes
    FROM m GROUP BY m.tenant_id) c
  LEFT JOIN pgbus.tenants t ON t.tenant_id = c.tenant_id
  -- what is stored: read only when the tenant has a quota
  CROSS JOIN LATERAL (SELECT coalesce(sum(u.bytes), 0)::bigint AS used
    FROM pgbus.tenant_usage u
    WHERE t.max_stored_bytes IS NOT NULL AND u.tenant_id = c.tenant_id) s
  WHERE c.bytes > 0),
-- The subscriptions of each topic the messages go to, looked up once per
-- topic (per message, a group commit of 100 probed the index 200 times:
-- about a tenth of the statement).
subs AS MATERIALIZED (
  SELECT t.tenant_id, t.topic, fs.name, fs.filter_path
  FROM (SELECT DISTINCT m.tenant_id, m.topic FROM m) t
  JOIN LATERAL (
    SELECT s1.name, s1.filter_path FROM pgbus.subscriptions s1
    WHERE s1.tenant_id = t.tenant_id AND s1.topic = t.topic
    UNION ALL
    SELECT s2.name, s2.filter_path FROM pgbus.subscriptions s2
    WHERE s2.tenant_id = t.tenant_id AND s2.topic_regex IS NOT NULL
      AND t.topic ~ s2.topic_regex) fs ON true),
offers AS (
  SELECT * FROM unnest($16::text[], $17::int8[], $18::int8[], $19::int8[], $20::int8[],
    $21::bool[]) AS o(subscription, lease, deadline_ms, max_count, max_bytes, first_may_exceed)),
-- The deliveries the offers take: ready at once (not delayed, no uploaded
-- payload), in claim order (priority, then publish order), the prefix that
-- fits each offer's credit. A message with an ordering key only when it
-- heads its key, as claim.sql decides: the first of its key in this commit
-- (for the subscription), and no earlier delivery of the key left in the
-- subscription (one probe of deliveries_by_ordering_key). Without offers,
-- nothing of it runs (the uncorrelated EXISTS is a one-time filter).
handed AS MATERIALIZED (
  SELECT r.subscription, r.id, r.lease, r.deadline_ms FROM (
    SELECT c.*, row_number() OVER w AS n, sum(c.size) OVER w AS running FROM (
      SELECT o.subscription, m.tenant_id, m.id, m.priority, m.size, m.ordering_key, o.lease,
        o.deadline_ms, o.max_count, o.max_bytes, o.first_may_exceed,
        m.payload_id IS NULL AND (m.deliver_at IS NULL OR m.deliver_at <= m.published_at)
          AS takeable,
        -- among all of the subscription's deliveries of this commit,
        -- delayed ones too
        row_number() OVER (PARTITION BY o.subscription, m.ordering_key ORDER BY m.id) AS of_key
      FROM offers o
      JOIN subs fs ON fs.name = o.subscription
      JOIN m ON m.tenant_id = fs.tenant_id AND m.topic = fs.topic
      WHERE EXISTS (SELECT FROM offers)
        AND (fs.filter_path IS NULL OR jsonb_path_match(m.attributes, fs.filter_path))) c
    WHERE c.takeable AND (c.ordering_key IS NULL OR (c.of_key = 1 AND NOT EXISTS (
      SELECT 1 FROM pgbus.deliveries e WHERE e.tenant_id = c.tenant_id
        AND e.subscription = c.subscription AND e.ordering_key = c.ordering_key
        AND e.message_id < c.id
        AND (e.expires_at IS NULL OR e.expires_at > now()))))
    WINDOW w AS (PARTITION BY c.subscription ORDER BY c.priority DESC, c.id
      ROWS UNBOUNDED PRECEDING)) r
  WHERE r.n <= r.max_count AND (r.running <= r.max_bytes OR (r.n = 1 AND r.first_may_exceed))),
-- One delivery per subscription of the topic or of a pattern matching it
-- (0011) whose filter (0010) the message's attributes pass: ready, held
-- until deliver_at, or leased to the offer that takes it (attempt 1).
fan_out AS (
  INSERT INTO pgbus.deliveries (tenant_id, subscription, message_id, priority, size,
    visible_at, expires_at, ordering_key, attempts, lease)
  SELECT m.tenant_id, fs.name, m.id, m.priority, m.size,
    CASE WHEN h.id IS NOT NULL THEN now() + h.deadline_ms * interval '1 millisecond'
      WHEN m.deliver_at > m.published_at THEN m.deliver_at END, m.expires_at,
    m.ordering_key, CASE WHEN h.id IS NOT NULL THEN 1 ELSE 0 END, h.lease
  FROM m JOIN subs fs ON fs.tenant_id = m.tenant_id AND fs.topic = m.topic
  LEFT JOIN handed h ON h.subscription = fs.name AND h.id = m.id
  WHERE fs.filter_path IS NULL OR jsonb_path_match(m.attributes, fs.filter_path)
  RETURNING subscription, message_id, lease, visible_at)
SELECT id, topic, published_at, expires_at, NULL::text AS subscription,
  NULL::timestamptz AS lease_expiry
FROM m
UNION ALL
SELECT f.message_id, NULL, NULL, NULL, f.subscription, f.visible_at
FROM fan_out f
WHERE EXISTS (SELECT FROM offers) AND (f.lease IS NOT NULL OR f.visible_at IS NULL)
  AND EXISTS (SELECT FROM offers o WHERE o.subscription = f.subscription)
ORDER BY subscription NULLS FIRST, id;
