# Writes OUT: a C array of {path, bytes, size} for every file under DIR (the web
# UI's static files, ui/), so that tessera-rest serves them without finding
# anything on disk at run time. Sorted by path: the same tree gives the same file.
file(GLOB_RECURSE files RELATIVE ${DIR} ${DIR}/*)
list(SORT files)
set(body "")
set(count 0)
foreach(rel IN LISTS files)
  file(READ ${DIR}/${rel} bytes HEX)
  string(LENGTH "${bytes}" hexlen)
  math(EXPR size "${hexlen} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "\\\\x\\1" bytes "${bytes}")
  # split the literal so that no line of generated code is huge
  string(REGEX REPLACE "((\\\\x[0-9a-f][0-9a-f]){64})" "\\1\"\n    \"" bytes "${bytes}")
  string(APPEND body "  {\"${rel}\", ${size},\n    \"${bytes}\"},\n")
  math(EXPR count "${count} + 1")
endforeach()
if(count EQUAL 0)
  set(body "  {0, 0, 0},\n")
endif()
file(WRITE ${OUT} "/* generated from ui/ by cmake/embed_ui.cmake */\n#include \"rest_ui.h\"\nconst rest_ui_file rest_ui_files[] = {\n${body}};\nconst size_t rest_ui_files_count = ${count};\n")
