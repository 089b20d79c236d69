# Runs an example and checks it: exit status 0, and stdout matching the regex in
# EXPECT_FILE (over the whole output; the file is written by examples/CMakeLists.txt).
#   cmake -DPROGRAM=... -DEXPECT_FILE=... -P check_output.cmake
file(READ "${EXPECT_FILE}" expect)
if(expect STREQUAL "")
  message(FATAL_ERROR "${EXPECT_FILE} is empty: no expected output to check")
endif()
execute_process(COMMAND "${PROGRAM}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} exited with ${rc}\n--- stdout\n${out}\n--- stderr\n${err}")
endif()
if(NOT out MATCHES "${expect}")
  message(FATAL_ERROR "${PROGRAM}: unexpected output\n--- got\n${out}\n--- expected (regex)\n${expect}")
endif()
message(STATUS "${PROGRAM}: exit 0, output as expected:\n${out}")
