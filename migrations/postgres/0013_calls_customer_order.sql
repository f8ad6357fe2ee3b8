-- A customer's contacts newest first (the screen-pop's last contacts, the customer page) in
-- the index's own order, ties on the same millisecond broken by id: the read stops after the
-- rows it shows whatever the planner knows of the table. Ordered by offered_at alone, a plan
-- made while the table was small (a new install, or a statement prepared then) sorted all of
-- the customer's calls on every pop: 565 rows read per pop at 430 set-ups a second from one
-- number on PostgreSQL.
DROP INDEX calls_customer;
CREATE INDEX calls_customer ON calls (customer_id, offered_at, id);
