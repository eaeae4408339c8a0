-- Attribute filters: the subscription's filter (as written) compiled once,
-- at creation, into a jsonpath predicate; the publish statement creates a
-- delivery only where jsonb_path_match(attributes, filter_path) holds.
ALTER TABLE pgbus.subscriptions ADD COLUMN filter_path jsonpath;
