# Generates a C++ source holding every db/schema/NNNN_*.sql file, in order.
# Inputs: SCHEMA_DIR, OUTPUT.
file(GLOB files RELATIVE "${SCHEMA_DIR}" "${SCHEMA_DIR}/*.sql")
foreach(f IN LISTS files)
  if(NOT f MATCHES "^[0-9][0-9][0-9][0-9]_[a-z0-9_]+\\.sql$")
    message(FATAL_ERROR "db/schema/${f}: migrations must be named NNNN_name.sql (lower case)")
  endif()
endforeach()
list(SORT files)
set(body "")
set(expected 1)
foreach(f IN LISTS files)
  string(SUBSTRING "${f}" 0 4 num)
  math(EXPR version "${num}" OUTPUT_FORMAT DECIMAL)
  if(NOT version EQUAL expected)
    message(FATAL_ERROR "schema migrations must be numbered 0001, 0002, ... without gaps: ${f}")
  endif()
  math(EXPR expected "${expected} + 1")
  file(READ "${SCHEMA_DIR}/${f}" sql)
  string(APPEND body "  {${version}, \"${f}\", R\"rsio_sql(${sql})rsio_sql\"},\n")
endforeach()
file(WRITE "${OUTPUT}.tmp"
"// Generated from db/schema by db/embed_schema.cmake. Do not edit.\n"
"#include \"db/migrate.h\"\n\n"
"namespace rsio::db {\n"
"namespace {\nconst Migration kMigrations[] = {\n${body}};\n}  // namespace\n\n"
"std::span<const Migration> builtin_migrations() { return kMigrations; }\n\n"
"}  // namespace rsio::db\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
