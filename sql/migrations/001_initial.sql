-- cliniko-sync initial schema (DESIGN §5).
-- Every tenant table carries organization_id, every unique key includes it, times are timestamptz,
-- Cliniko ids are text. Row-level security is enabled at the end of this file.

CREATE TABLE organizations (
    id               text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name             text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    country          char(2) NOT NULL DEFAULT 'AU' CHECK (country ~ '^[A-Z]{2}$'),
    time_zone        text NOT NULL DEFAULT 'Australia/Sydney',
    window_days      integer NOT NULL DEFAULT 45 CHECK (window_days BETWEEN 1 AND 3650),
    include_upcoming boolean NOT NULL DEFAULT false,
    enabled          boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE organization_services (
    organization_id       text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    service               text NOT NULL,
    enabled               boolean NOT NULL DEFAULT true,
    settings              jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_validated_at     timestamptz,
    last_validation_error text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, service)
);

CREATE TABLE api_credentials (
    id              bigserial PRIMARY KEY,
    organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    service         text NOT NULL,
    token           text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, service),
    FOREIGN KEY (organization_id, service) REFERENCES organization_services (organization_id, service)
        ON DELETE CASCADE
);

-- contacts (the clinic's address book) is created by 008_contacts.sql, which can also adopt a contacts table that
-- already exists. It was created here until then: see SUPERSEDED_CHECKSUMS in cliniko_sync/db.py.

-- Mirror tables: typed columns for the queries, raw jsonb (scrubbed of clinical free text) for everything else.
-- last_full_pass: the full pass that last saw the row; removed_at: a complete full pass did not see it.
CREATE TABLE cliniko_patients (
    organization_id      text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id                   text NOT NULL,
    first_name           text,
    last_name            text,
    name                 text,
    email                text,
    phone                text,
    phone_valid          boolean NOT NULL DEFAULT false,
    created_at           timestamptz,
    updated_at           timestamptz NOT NULL,
    archived_at          timestamptz,
    deleted_at           timestamptz,
    merged_at            timestamptz,
    raw                  jsonb NOT NULL,
    last_full_pass       bigint,
    removed_at           timestamptz,
    synced_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);

CREATE TABLE cliniko_individual_appointments (
    organization_id     text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id                  text NOT NULL,
    patient_id          text,
    practitioner_id     text,
    appointment_type_id text,
    business_id         text,
    starts_at           timestamptz,
    ends_at             timestamptz,
    did_not_arrive      boolean NOT NULL DEFAULT false,
    cancelled_at        timestamptz,
    archived_at         timestamptz,
    deleted_at          timestamptz,
    created_at          timestamptz,
    updated_at          timestamptz NOT NULL,
    raw                 jsonb NOT NULL,
    last_full_pass      bigint,
    removed_at          timestamptz,
    synced_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);
CREATE INDEX cliniko_individual_appointments_patient_idx
    ON cliniko_individual_appointments (organization_id, patient_id, starts_at);

CREATE TABLE cliniko_group_appointments (
    organization_id     text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id                  text NOT NULL,
    practitioner_id     text,
    appointment_type_id text,
    business_id         text,
    starts_at           timestamptz,
    ends_at             timestamptz,
    max_attendees       integer,
    archived_at         timestamptz,
    deleted_at          timestamptz,
    created_at          timestamptz,
    updated_at          timestamptz NOT NULL,
    raw                 jsonb NOT NULL,
    last_full_pass      bigint,
    removed_at          timestamptz,
    synced_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);

CREATE TABLE cliniko_attendees (
    organization_id      text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id                   text NOT NULL,
    patient_id           text,
    group_appointment_id text,
    arrived              boolean,
    did_not_arrive       boolean NOT NULL DEFAULT false,
    cancelled_at         timestamptz,
    archived_at          timestamptz,
    deleted_at           timestamptz,
    created_at           timestamptz,
    updated_at           timestamptz NOT NULL,
    raw                  jsonb NOT NULL,
    last_full_pass       bigint,
    removed_at           timestamptz,
    synced_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);
CREATE INDEX cliniko_attendees_patient_idx ON cliniko_attendees (organization_id, patient_id);
CREATE INDEX cliniko_attendees_group_idx ON cliniko_attendees (organization_id, group_appointment_id);

CREATE TABLE cliniko_appointment_types (
    organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id              text NOT NULL,
    name            text,
    created_at      timestamptz,
    updated_at      timestamptz NOT NULL,
    archived_at     timestamptz,
    deleted_at      timestamptz,
    raw             jsonb NOT NULL,
    last_full_pass  bigint,
    removed_at      timestamptz,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);

CREATE TABLE cliniko_practitioners (
    organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id              text NOT NULL,
    name            text,
    created_at      timestamptz,
    updated_at      timestamptz NOT NULL,
    archived_at     timestamptz,
    deleted_at      timestamptz,
    raw             jsonb NOT NULL,
    last_full_pass  bigint,
    removed_at      timestamptz,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);

-- Per stream crawl state, committed with each page. position_updated_at + position_ids: how far the pass under way
-- has read (ids already read at exactly that updated_at); tie_after_id: keyset position inside one updated_at shared
-- by more records than a page holds. cursor_updated_at: where the next incremental pass starts (minus an overlap).
CREATE TABLE sync_state (
    organization_id          text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    stream                   text NOT NULL,
    pass_id                  bigint,
    pass_mode                text CHECK (pass_mode IN ('full', 'incremental')),
    pass_started_at          timestamptz,
    pass_complete            boolean NOT NULL DEFAULT false,
    position_updated_at      timestamptz,
    position_ids             text[] NOT NULL DEFAULT '{}',
    tie_after_id             text,
    cursor_updated_at        timestamptz,
    last_complete_at         timestamptz,
    last_full_complete_at    timestamptz,
    updated_at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, stream)
);

CREATE TABLE sync_log (
    id               bigserial PRIMARY KEY,
    organization_id  text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    status           text NOT NULL CHECK (status IN ('running', 'success', 'failed', 'partial', 'abandoned', 'skipped')),
    mode             text CHECK (mode IN ('full', 'incremental')),
    started_at       timestamptz NOT NULL DEFAULT now(),
    heartbeat_at     timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    as_of            timestamptz NOT NULL,
    window_days      integer NOT NULL,
    include_upcoming boolean NOT NULL DEFAULT false,
    hostname         text,
    pid              integer,
    stats            jsonb NOT NULL DEFAULT '{}'::jsonb,
    error_class      text,
    error_message    text,
    UNIQUE (organization_id, id)
);
CREATE INDEX sync_log_org_started_idx ON sync_log (organization_id, started_at DESC);
CREATE INDEX sync_log_org_status_idx ON sync_log (organization_id, status, finished_at DESC);

CREATE TABLE active_patients (
    id                         bigserial PRIMARY KEY,
    organization_id            text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    contact_id                 uuid,
    cliniko_patient_id         text NOT NULL,
    recent_appointment_count   integer NOT NULL DEFAULT 0,
    upcoming_appointment_count integer NOT NULL DEFAULT 0,
    total_appointment_count    integer NOT NULL DEFAULT 0,
    last_appointment_date      timestamptz,
    next_appointment_date      timestamptz,
    recent_appointments        jsonb NOT NULL DEFAULT '[]'::jsonb,
    upcoming_appointments      jsonb NOT NULL DEFAULT '[]'::jsonb,
    search_date_from           timestamptz NOT NULL,
    search_date_to             timestamptz NOT NULL,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, cliniko_patient_id)
);
CREATE INDEX active_patients_last_idx ON active_patients (organization_id, last_appointment_date DESC);
CREATE INDEX active_patients_contact_idx ON active_patients (organization_id, contact_id);

-- The definitions of DESIGN §2 in one place. A current patient is not archived, merged or deleted (in Cliniko, or
-- removed from the mirror by a full pass). A qualifying appointment is an individual appointment or a group-class
-- attendance that is not cancelled, archived or deleted; a group attendance is timed by its group appointment.
-- security_invoker: a reader role querying the views stays under the tables' row-level security.
CREATE VIEW current_patients WITH (security_invoker = true) AS
SELECT p.*
FROM cliniko_patients p
WHERE p.archived_at IS NULL AND p.merged_at IS NULL AND p.deleted_at IS NULL AND p.removed_at IS NULL;

CREATE VIEW qualifying_appointments WITH (security_invoker = true) AS
SELECT a.organization_id, a.patient_id, a.id, 'individual' AS kind, a.starts_at, a.ends_at,
       a.appointment_type_id, a.practitioner_id, a.did_not_arrive
FROM cliniko_individual_appointments a
WHERE a.patient_id IS NOT NULL AND a.starts_at IS NOT NULL
  AND a.cancelled_at IS NULL AND a.archived_at IS NULL AND a.deleted_at IS NULL AND a.removed_at IS NULL
UNION ALL
SELECT t.organization_id, t.patient_id, t.id, 'group', g.starts_at, g.ends_at,
       g.appointment_type_id, g.practitioner_id, t.did_not_arrive
FROM cliniko_attendees t
JOIN cliniko_group_appointments g ON g.organization_id = t.organization_id AND g.id = t.group_appointment_id
WHERE t.patient_id IS NOT NULL AND g.starts_at IS NOT NULL
  AND t.cancelled_at IS NULL AND t.archived_at IS NULL AND t.deleted_at IS NULL AND t.removed_at IS NULL
  AND g.archived_at IS NULL AND g.deleted_at IS NULL AND g.removed_at IS NULL;

CREATE INDEX cliniko_individual_appointments_starts_idx
    ON cliniko_individual_appointments (organization_id, starts_at);
CREATE INDEX cliniko_group_appointments_starts_idx ON cliniko_group_appointments (organization_id, starts_at);

-- Row-level security: a role that does not own these tables sees only the organization named by the
-- session setting cliniko_sync.organization_id, and no rows when it is unset.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'organization_services', 'api_credentials', 'cliniko_patients',
        'cliniko_individual_appointments', 'cliniko_group_appointments', 'cliniko_attendees',
        'cliniko_appointment_types', 'cliniko_practitioners', 'sync_state', 'sync_log', 'active_patients'
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING '
            '(organization_id = current_setting(''cliniko_sync.organization_id'', true))', t);
    END LOOP;
END
$$;
ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON organizations
    USING (id = current_setting('cliniko_sync.organization_id', true));
