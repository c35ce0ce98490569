//! The built-in function catalog and the configurable overrides.
//!
//! Every function call found in a statement is looked up here:
//!
//! 1. [`FunctionOverrides`] first (`write_functions` wins over
//!    `read_only_functions` when a name is in both);
//! 2. then, for unqualified or `pg_catalog.`-qualified names only, the static
//!    lists below ([`SESSION_PIN_FUNCTIONS`], [`WRITE_FUNCTIONS`],
//!    [`READ_ONLY_FUNCTIONS`], and `set_config`, which depends on its third
//!    argument);
//! 3. anything else is reported in `Classification::unknown_functions` for the
//!    caller to resolve in `pg_proc`.
//!
//! Only exact names are listed, never prefixes: a user function called
//! `json_upsert()` must not pass for a built-in reader.

use std::collections::HashSet;

use sqlparser::ast::{ObjectName, ObjectNamePart};

/// Built-in functions that write, change state only the primary has, or are
/// node-specific (must run on the primary; the statement becomes a `Write`
/// whose reason is the function name):
/// sequences (`nextval`, `setval`, `currval`, `lastval`: the latter two read
/// session-local sequence state), transaction-scoped advisory locks and all
/// unlocks, `pg_notify`, transaction ids (`txid_current`, `pg_current_xact_id`),
/// WAL position and control (`pg_current_wal_lsn`, `pg_switch_wal`,
/// `pg_create_restore_point`, backups, `pg_promote`, replay control),
/// replication slots and origins, `pg_export_snapshot`, configuration and
/// backend signalling (`pg_reload_conf`, `pg_terminate_backend`,
/// `pg_cancel_backend`), statistics resets, large-object writers and
/// descriptors (`lo_*`, `loread`, `lowrite`; `lo_get` only reads), adminpack
/// file writers and `dblink` (remote side effects).
#[rustfmt::skip]
pub const WRITE_FUNCTIONS: &[&str] = &[
    "currval", "dblink", "dblink_cancel_query", "dblink_close", "dblink_disconnect",
    "dblink_error_message", "dblink_exec", "dblink_fetch", "dblink_get_connections",
    "dblink_get_notify", "dblink_get_result", "dblink_is_busy", "dblink_open", "dblink_send_query",
    "lastval", "lo_close", "lo_creat", "lo_create", "lo_export", "lo_from_bytea", "lo_import",
    "lo_lseek", "lo_lseek64", "lo_open", "lo_put", "lo_tell", "lo_tell64", "lo_truncate",
    "lo_truncate64", "lo_unlink", "loread", "lowrite", "nextval", "pg_advisory_unlock",
    "pg_advisory_unlock_all", "pg_advisory_unlock_shared", "pg_advisory_xact_lock",
    "pg_advisory_xact_lock_shared", "pg_backup_start", "pg_backup_stop", "pg_cancel_backend",
    "pg_copy_logical_replication_slot", "pg_copy_physical_replication_slot",
    "pg_create_logical_replication_slot", "pg_create_physical_replication_slot",
    "pg_create_restore_point", "pg_current_wal_flush_lsn", "pg_current_wal_insert_lsn",
    "pg_current_wal_lsn", "pg_current_xact_id", "pg_current_xact_id_if_assigned",
    "pg_current_xlog_flush_location", "pg_current_xlog_insert_location",
    "pg_current_xlog_location", "pg_drop_replication_slot", "pg_export_snapshot",
    "pg_extension_config_dump", "pg_file_rename", "pg_file_sync", "pg_file_unlink",
    "pg_file_write", "pg_import_system_collations", "pg_log_backend_memory_contexts",
    "pg_log_standby_snapshot", "pg_logical_emit_message", "pg_logical_slot_get_binary_changes",
    "pg_logical_slot_get_changes", "pg_logical_slot_peek_binary_changes",
    "pg_logical_slot_peek_changes", "pg_notify", "pg_promote", "pg_reload_conf",
    "pg_replication_origin_advance", "pg_replication_origin_create", "pg_replication_origin_drop",
    "pg_replication_origin_session_reset", "pg_replication_origin_xact_reset",
    "pg_replication_origin_xact_setup", "pg_replication_slot_advance", "pg_rotate_logfile",
    "pg_start_backup", "pg_stat_reset", "pg_stat_reset_backend_stats",
    "pg_stat_reset_replication_slot", "pg_stat_reset_shared",
    "pg_stat_reset_single_function_counters", "pg_stat_reset_single_table_counters",
    "pg_stat_reset_slru", "pg_stat_reset_subscription_stats", "pg_stat_statements_reset",
    "pg_stop_backup", "pg_switch_wal", "pg_switch_xlog", "pg_sync_replication_slots",
    "pg_terminate_backend", "pg_truncate_visibility_map", "pg_try_advisory_xact_lock",
    "pg_try_advisory_xact_lock_shared", "pg_wal_replay_pause", "pg_wal_replay_resume",
    "pg_walfile_name", "pg_walfile_name_offset", "setval", "txid_current",
    "txid_current_if_assigned",
];

/// Built-in functions that create session state on the backend that runs
/// them: the statement is a `Write` and pins the session to the primary.
/// Session-level advisory locks (`pg_advisory_lock`, `pg_try_advisory_lock`
/// and their `_shared` forms), named `dblink` connections, `setseed` and
/// `pg_replication_origin_session_setup`. `set_config(name, value, false)` is
/// handled separately (it pins unless its third argument is literally true).
#[rustfmt::skip]
pub const SESSION_PIN_FUNCTIONS: &[&str] = &[
    "dblink_connect", "dblink_connect_u", "pg_advisory_lock", "pg_advisory_lock_shared",
    "pg_replication_origin_session_setup", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
    "setseed",
];

/// Built-in functions known to be safe on a replica: aggregates and window
/// functions, math, string, date/time, JSON/JSONB, array, range, network,
/// text search, UUID and XML functions, casts spelled as functions, catalog
/// and size inspection (`pg_get_*`, `pg_*_size`, `has_*_privilege`), session
/// information (`current_setting`, `version`, `inet_server_addr`, ...),
/// recovery status (`pg_is_in_recovery`, `pg_last_wal_replay_lsn`, ...) and a
/// few volatile but harmless ones (`random`, `clock_timestamp`, `pg_sleep`,
/// `gen_random_uuid`). They are filtered out of `unknown_functions`.
#[rustfmt::skip]
pub const READ_ONLY_FUNCTIONS: &[&str] = &[
    "abbrev", "abs", "acos", "acosd", "acosh", "age", "any_value", "area", "array", "array_agg",
    "array_append", "array_cat", "array_dims", "array_fill", "array_length", "array_lower",
    "array_ndims", "array_position", "array_positions", "array_prepend", "array_remove",
    "array_replace", "array_reverse", "array_sample", "array_shuffle", "array_sort",
    "array_to_json", "array_to_string", "array_to_tsvector", "array_upper", "ascii", "asin",
    "asind", "asinh", "atan", "atan2", "atan2d", "atand", "atanh", "avg", "bit_and", "bit_count",
    "bit_length", "bit_or", "bit_xor", "bool", "bool_and", "bool_or", "bound_box", "box",
    "broadcast", "btrim", "bytea", "cardinality", "cbrt", "ceil", "ceiling", "center", "char",
    "char_length", "character_length", "chr", "cidr", "circle", "clock_timestamp", "coalesce",
    "col_description", "concat", "concat_ws", "convert", "convert_from", "convert_to", "corr",
    "cos", "cosd", "cosh", "cot", "cotd", "count", "covar_pop", "covar_samp", "cume_dist",
    "current_catalog", "current_database", "current_date", "current_query", "current_role",
    "current_schema", "current_schemas", "current_setting", "current_time", "current_timestamp",
    "current_user", "date", "date_add", "date_bin", "date_part", "date_subtract", "date_trunc",
    "datemultirange", "daterange", "decode", "degrees", "dense_rank", "diameter", "div", "encode",
    "erf", "erfc", "every", "exp", "extract", "factorial", "family", "first_value", "float4",
    "float8", "floor", "format", "format_type", "gamma", "gcd", "gen_random_uuid",
    "generate_series", "generate_subscripts", "get_bit", "get_byte", "get_current_ts_config",
    "greatest", "grouping", "has_any_column_privilege", "has_column_privilege",
    "has_database_privilege", "has_foreign_data_wrapper_privilege", "has_function_privilege",
    "has_language_privilege", "has_largeobject_privilege", "has_parameter_privilege",
    "has_schema_privilege", "has_sequence_privilege", "has_server_privilege",
    "has_table_privilege", "has_tablespace_privilege", "has_type_privilege", "height", "host",
    "hostmask", "inet", "inet_client_addr", "inet_client_port", "inet_merge", "inet_same_family",
    "inet_server_addr", "inet_server_port", "initcap", "int2", "int4", "int4multirange",
    "int4range", "int8", "int8multirange", "int8range", "interval", "isclosed", "isempty",
    "isfinite", "isopen", "json_agg", "json_agg_strict", "json_array", "json_array_elements",
    "json_array_elements_text", "json_array_length", "json_arrayagg", "json_build_array",
    "json_build_object", "json_each", "json_each_text", "json_exists", "json_extract_path",
    "json_extract_path_text", "json_object", "json_object_agg", "json_object_agg_strict",
    "json_object_agg_unique", "json_object_agg_unique_strict", "json_object_keys",
    "json_objectagg", "json_populate_record", "json_populate_recordset", "json_query",
    "json_scalar", "json_serialize", "json_strip_nulls", "json_to_record", "json_to_recordset",
    "json_to_tsvector", "json_typeof", "json_value", "jsonb_agg", "jsonb_agg_strict",
    "jsonb_array_elements", "jsonb_array_elements_text", "jsonb_array_length", "jsonb_build_array",
    "jsonb_build_object", "jsonb_concat", "jsonb_contained", "jsonb_contains", "jsonb_delete",
    "jsonb_delete_path", "jsonb_each", "jsonb_each_text", "jsonb_exists", "jsonb_exists_all",
    "jsonb_exists_any", "jsonb_extract_path", "jsonb_extract_path_text", "jsonb_insert",
    "jsonb_object", "jsonb_object_agg", "jsonb_object_agg_strict", "jsonb_object_agg_unique",
    "jsonb_object_agg_unique_strict", "jsonb_object_keys", "jsonb_path_exists",
    "jsonb_path_exists_tz", "jsonb_path_match", "jsonb_path_match_tz", "jsonb_path_query",
    "jsonb_path_query_array", "jsonb_path_query_array_tz", "jsonb_path_query_first",
    "jsonb_path_query_first_tz", "jsonb_path_query_tz", "jsonb_populate_record",
    "jsonb_populate_record_valid", "jsonb_populate_recordset", "jsonb_pretty", "jsonb_set",
    "jsonb_set_lax", "jsonb_strip_nulls", "jsonb_to_record", "jsonb_to_recordset",
    "jsonb_to_tsvector", "jsonb_typeof", "justify_days", "justify_hours", "justify_interval",
    "lag", "last_value", "lcm", "lead", "least", "left", "length", "line", "ln", "lo_get",
    "localtime", "localtimestamp", "log", "log10", "lower", "lower_inc", "lower_inf", "lpad",
    "lseg", "ltrim", "make_date", "make_interval", "make_time", "make_timestamp",
    "make_timestamptz", "masklen", "max", "md5", "min", "min_scale", "mod", "mode", "multirange",
    "name", "netmask", "network", "normalize", "now", "npoints", "nth_value", "ntile", "nullif",
    "num_nonnulls", "num_nulls", "numeric", "nummultirange", "numnode", "numrange",
    "obj_description", "octet_length", "oid", "overlay", "parse_ident", "path", "pclose",
    "percent_rank", "percentile_cont", "percentile_disc", "pg_available_extension_versions",
    "pg_available_extensions", "pg_backend_pid", "pg_blocking_pids", "pg_char_to_encoding",
    "pg_client_encoding", "pg_collation_is_visible", "pg_column_compression",
    "pg_column_is_updatable", "pg_column_size", "pg_conf_load_time", "pg_control_checkpoint",
    "pg_control_init", "pg_control_recovery", "pg_control_system", "pg_conversion_is_visible",
    "pg_current_logfile", "pg_current_snapshot", "pg_database_size", "pg_describe_object",
    "pg_encoding_to_char", "pg_filenode_relation", "pg_function_is_visible",
    "pg_get_constraintdef", "pg_get_expr", "pg_get_function_arguments",
    "pg_get_function_identity_arguments", "pg_get_function_result", "pg_get_functiondef",
    "pg_get_indexdef", "pg_get_keywords", "pg_get_object_address", "pg_get_partkeydef",
    "pg_get_ruledef", "pg_get_serial_sequence", "pg_get_statisticsobjdef", "pg_get_triggerdef",
    "pg_get_userbyid", "pg_get_viewdef", "pg_get_wal_replay_pause_state", "pg_has_role",
    "pg_identify_object", "pg_identify_object_as_address", "pg_index_column_has_property",
    "pg_index_has_property", "pg_indexam_has_property", "pg_indexes_size", "pg_input_error_info",
    "pg_input_is_valid", "pg_is_in_recovery", "pg_is_other_temp_schema", "pg_is_wal_replay_paused",
    "pg_jit_available", "pg_last_committed_xact", "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn", "pg_last_xact_replay_timestamp", "pg_listening_channels",
    "pg_my_temp_schema", "pg_notification_queue_usage", "pg_opclass_is_visible",
    "pg_operator_is_visible", "pg_opfamily_is_visible", "pg_options_to_table",
    "pg_postmaster_start_time", "pg_relation_filenode", "pg_relation_filepath",
    "pg_relation_is_updatable", "pg_relation_size", "pg_safe_snapshot_blocking_pids",
    "pg_sequence_last_value", "pg_sequence_parameters", "pg_settings_get_flags", "pg_size_bytes",
    "pg_size_pretty", "pg_sleep", "pg_sleep_for", "pg_sleep_until", "pg_snapshot_xip",
    "pg_snapshot_xmax", "pg_snapshot_xmin", "pg_stat_get_activity", "pg_table_is_visible",
    "pg_table_size", "pg_tablespace_databases", "pg_tablespace_location", "pg_tablespace_size",
    "pg_total_relation_size", "pg_trigger_depth", "pg_ts_config_is_visible",
    "pg_ts_dict_is_visible", "pg_ts_parser_is_visible", "pg_ts_template_is_visible",
    "pg_type_is_visible", "pg_typeof", "pg_visible_in_snapshot", "pg_wal_lsn_diff",
    "pg_xact_commit_timestamp", "pg_xact_status", "phraseto_tsquery", "pi", "plainto_tsquery",
    "point", "polygon", "popen", "position", "pow", "power", "querytree", "quote_ident",
    "quote_literal", "quote_nullable", "radians", "radius", "random", "random_normal", "range_agg",
    "range_intersect_agg", "range_merge", "rank", "regclass", "regexp_count", "regexp_instr",
    "regexp_like", "regexp_match", "regexp_matches", "regexp_replace", "regexp_split_to_array",
    "regexp_split_to_table", "regexp_substr", "regr_avgx", "regr_avgy", "regr_count",
    "regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy", "repeat",
    "replace", "reverse", "right", "round", "row", "row_number", "row_security_active",
    "row_to_json", "rpad", "rtrim", "scale", "session_user", "set_bit", "set_byte", "set_masklen",
    "setweight", "sha224", "sha256", "sha384", "sha512", "shobj_description", "sign", "sin",
    "sind", "sinh", "slope", "split_part", "sqrt", "starts_with", "statement_timestamp", "stddev",
    "stddev_pop", "stddev_samp", "string_agg", "string_to_array", "string_to_table", "strip",
    "strpos", "substr", "substring", "sum", "system_user", "tan", "tand", "tanh", "text", "time",
    "timeofday", "timestamp", "timestamptz", "timetz", "timezone", "to_ascii", "to_char",
    "to_date", "to_hex", "to_json", "to_jsonb", "to_number", "to_regclass", "to_regcollation",
    "to_regnamespace", "to_regoper", "to_regoperator", "to_regproc", "to_regprocedure",
    "to_regrole", "to_regtype", "to_regtypemod", "to_timestamp", "to_tsquery", "to_tsvector",
    "transaction_timestamp", "translate", "trim", "trim_array", "trim_scale", "trunc", "ts_debug",
    "ts_delete", "ts_filter", "ts_headline", "ts_lexize", "ts_parse", "ts_rank", "ts_rank_cd",
    "ts_rewrite", "ts_stat", "ts_token_type", "tsmultirange", "tsquery_phrase", "tsrange",
    "tstzmultirange", "tstzrange", "tsvector_to_array", "txid_current_snapshot",
    "txid_snapshot_xip", "txid_snapshot_xmax", "txid_snapshot_xmin", "txid_status",
    "txid_visible_in_snapshot", "unistr", "unnest", "upper", "upper_inc", "upper_inf", "user",
    "uuid", "uuid_extract_timestamp", "uuid_extract_version", "uuidv4", "uuidv7", "var_pop",
    "var_samp", "varchar", "variance", "version", "websearch_to_tsquery", "width", "width_bucket",
    "xml_is_well_formed", "xml_is_well_formed_content", "xml_is_well_formed_document", "xmlagg",
    "xmlcomment", "xmlconcat", "xmlelement", "xmlexists", "xmlforest", "xmlparse", "xmlpi",
    "xmlroot", "xmlserialize", "xpath", "xpath_exists",
];

/// What the catalog says about one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FnClass {
    /// Safe on a replica.
    Read,
    /// Needs the primary; the `&'static str` is the reason (the function name).
    Write(&'static str),
    /// Needs the primary and pins the session there.
    Pin(&'static str),
    /// `set_config`: depends on its `is_local` argument.
    SetConfig,
}

/// Looks a lowercase, unqualified built-in name up in the static lists.
pub(crate) fn catalog_lookup(name: &str) -> Option<FnClass> {
    if name == "set_config" {
        return Some(FnClass::SetConfig);
    }
    let find = |list: &'static [&'static str]| {
        list.binary_search_by(|probe| (*probe).cmp(name))
            .ok()
            .map(|i| list[i])
    };
    if let Some(n) = find(SESSION_PIN_FUNCTIONS) {
        return Some(FnClass::Pin(n));
    }
    if let Some(n) = find(WRITE_FUNCTIONS) {
        return Some(FnClass::Write(n));
    }
    find(READ_ONLY_FUNCTIONS).map(|_| FnClass::Read)
}

/// Configured exceptions to the built-in catalog (the config's
/// `read_only_functions` and `write_functions`), applied before it.
///
/// Names compare case-insensitively, and a `public.` or `pg_catalog.` schema
/// is ignored on both sides: `public.Audit_Log` in the config matches
/// `audit_log(...)` and `PUBLIC.audit_log(...)` in SQL. Other schemas must
/// match. A name listed in both sets counts as a write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionOverrides {
    read_only: HashSet<String>,
    write: HashSet<String>,
}

impl FunctionOverrides {
    /// Builds overrides from the configured lists.
    pub fn new<R, W>(read_only: R, write: W) -> Self
    where
        R: IntoIterator,
        R::Item: AsRef<str>,
        W: IntoIterator,
        W::Item: AsRef<str>,
    {
        Self {
            read_only: read_only
                .into_iter()
                .map(|n| override_key(n.as_ref()))
                .collect(),
            write: write
                .into_iter()
                .map(|n| override_key(n.as_ref()))
                .collect(),
        }
    }

    /// No overrides: the built-in catalog alone.
    pub fn none() -> Self {
        Self::default()
    }

    /// True if no function is overridden.
    pub fn is_empty(&self) -> bool {
        self.read_only.is_empty() && self.write.is_empty()
    }

    /// True if `name` (as written in SQL or as reported in
    /// `unknown_functions`) is configured as a writing function.
    pub fn is_write(&self, name: &str) -> bool {
        !self.write.is_empty() && self.write.contains(&override_key(name))
    }

    /// True if `name` is configured as read-only (and not also as a write).
    pub fn is_read_only(&self, name: &str) -> bool {
        !self.read_only.is_empty()
            && !self.is_write(name)
            && self.read_only.contains(&override_key(name))
    }
}

/// Normalizes a configured or written function name for override lookups:
/// quotes dropped, lowercased, `public.`/`pg_catalog.` removed.
fn override_key(name: &str) -> String {
    let lowered: String = name
        .trim()
        .chars()
        .filter(|&c| c != '"')
        .flat_map(char::to_lowercase)
        .collect();
    for schema in ["public.", "pg_catalog."] {
        if let Some(rest) = lowered.strip_prefix(schema) {
            return rest.to_owned();
        }
    }
    lowered
}

/// The display form of a function name: parts joined by `.`, unquoted parts
/// lowercased, quoted parts kept as written (re-quoted if they contain `.`
/// or `"`, so the result stays unambiguous).
pub(crate) fn display_name(name: &ObjectName) -> String {
    let mut out = String::new();
    for (i, part) in name.0.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        match part {
            ObjectNamePart::Identifier(ident) => match ident.quote_style {
                None => out.push_str(&ident.value.to_lowercase()),
                Some(_) if ident.value.contains(['.', '"']) => {
                    out.push('"');
                    out.push_str(&ident.value.replace('"', "\"\""));
                    out.push('"');
                }
                Some(_) => out.push_str(&ident.value),
            },
            other => out.push_str(&other.to_string()),
        }
    }
    out
}

/// The catalog name for a call: the lowercase function name if it is
/// unqualified or qualified with `pg_catalog`, `None` otherwise (a function
/// in another schema is never a built-in).
pub(crate) fn builtin_name(name: &ObjectName) -> Option<String> {
    let ident = |p: &ObjectNamePart| match p {
        ObjectNamePart::Identifier(i) => Some(match i.quote_style {
            None => i.value.to_ascii_lowercase(),
            Some(_) => i.value.clone(),
        }),
        ObjectNamePart::Function(_) => None,
    };
    match name.0.as_slice() {
        [f] => ident(f),
        [schema, f] if ident(schema).as_deref() == Some("pg_catalog") => ident(f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_unique_and_disjoint() {
        for list in [WRITE_FUNCTIONS, SESSION_PIN_FUNCTIONS, READ_ONLY_FUNCTIONS] {
            assert!(
                list.windows(2).all(|w| w[0] < w[1]),
                "unsorted near {list:?}"
            );
            assert!(list
                .iter()
                .all(|n| n.bytes().all(|b| !b.is_ascii_uppercase())));
        }
        for n in READ_ONLY_FUNCTIONS {
            assert!(
                !WRITE_FUNCTIONS.contains(n) && !SESSION_PIN_FUNCTIONS.contains(n),
                "{n}"
            );
        }
        for n in SESSION_PIN_FUNCTIONS {
            assert!(!WRITE_FUNCTIONS.contains(n), "{n}");
        }
    }

    #[test]
    fn lookup() {
        assert_eq!(catalog_lookup("nextval"), Some(FnClass::Write("nextval")));
        assert_eq!(
            catalog_lookup("pg_advisory_lock"),
            Some(FnClass::Pin("pg_advisory_lock"))
        );
        assert_eq!(catalog_lookup("count"), Some(FnClass::Read));
        assert_eq!(catalog_lookup("set_config"), Some(FnClass::SetConfig));
        assert_eq!(catalog_lookup("my_func"), None);
    }

    #[test]
    fn overrides_normalize_names() {
        let o = FunctionOverrides::new(["Public.Safe_Fn", "both"], ["pg_catalog.Audit", "BOTH"]);
        assert!(o.is_read_only("safe_fn"));
        assert!(o.is_read_only("public.SAFE_FN"));
        assert!(o.is_read_only("\"safe_fn\""));
        assert!(!o.is_read_only("other.safe_fn"));
        assert!(o.is_write("audit"));
        assert!(o.is_write("public.audit"));
        assert!(o.is_write("both") && !o.is_read_only("both"));
        assert!(!o.is_empty() && FunctionOverrides::none().is_empty());
    }
}
