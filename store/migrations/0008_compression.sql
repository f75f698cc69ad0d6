-- Mail is mostly compressed already (base64 attachments, images, PDFs): PostgreSQL's default
-- pglz spent about 40 % of the backend's CPU during an IMAP import and saved nothing (1,376 MiB
-- with pglz, 1,378 MiB with lz4; bench/README.md). lz4 costs a fraction and still shrinks the
-- text bodies that do compress. Applies to values written from now on.
ALTER TABLE messages ALTER COLUMN raw SET COMPRESSION lz4;
ALTER TABLE messages ALTER COLUMN text_body SET COMPRESSION lz4;
ALTER TABLE messages ALTER COLUMN html_body SET COMPRESSION lz4;
ALTER TABLE attachments ALTER COLUMN data SET COMPRESSION lz4;
ALTER TABLE outbox ALTER COLUMN raw SET COMPRESSION lz4;
ALTER TABLE outbox_attachments ALTER COLUMN data SET COMPRESSION lz4;
