# mailgate_embed(NAME SYMBOL FILES...): writes ${CMAKE_BINARY_DIR}/NAME.cpp defining
#   const std::vector<mailgate::EmbeddedFile>& SYMBOL();
# holding every file's base name and bytes, sorted by name. Used for SQL migrations and the web UI,
# so the installed binary needs no data files beside it.
function(mailgate_embed name symbol)
  set(out ${CMAKE_BINARY_DIR}/${name}.cpp)
  string(REPLACE ";" "|" files "${ARGN}")
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DOUT=${out} -DSYMBOL=${symbol} "-DFILES=${files}"
            -P ${CMAKE_SOURCE_DIR}/cmake/embed_run.cmake
    DEPENDS ${ARGN} ${CMAKE_SOURCE_DIR}/cmake/embed_run.cmake
    COMMENT "Embedding ${name}"
    VERBATIM)
endfunction()
