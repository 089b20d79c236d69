# The package test: installs flowpool into a temporary prefix, then builds the
# consumer in tests/package/consumer/ three ways against it, runs each build and
# checks every line it prints:
#   1. find_package(flowpool CONFIG) from the prefix (and from the build tree's export());
#   2. add_subdirectory() of flowpool's source tree;
#   3. pkg-config and a plain compiler command.
# Run by ctest (tests/package/CMakeLists.txt) as
#   cmake -DKIND=shared|static -DSOURCE_DIR=... -DWORK_DIR=... -DVERSION=x.y.z
#         -DGENERATOR=... -DCXX=... -DWITH_CLI=ON|OFF -P run_package_test.cmake
# The library is built alone (tests, benchmarks, examples and docs off, -j2);
# WITH_CLI=ON also installs the CLI and checks it and the shipped graphs.
cmake_minimum_required(VERSION 3.22)

foreach(v KIND SOURCE_DIR WORK_DIR VERSION GENERATOR CXX)
  if(NOT DEFINED ${v} OR "${${v}}" STREQUAL "")
    message(FATAL_ERROR "run_package_test: -D${v}=... is required")
  endif()
endforeach()
if(KIND STREQUAL "shared")
  set(shared ON)
elseif(KIND STREQUAL "static")
  set(shared OFF)
else()
  message(FATAL_ERROR "run_package_test: KIND must be shared or static, got '${KIND}'")
endif()
if(NOT DEFINED WITH_CLI)
  set(WITH_CLI OFF)
endif()

set(prefix "${WORK_DIR}/prefix")
set(consumer_src "${SOURCE_DIR}/tests/package/consumer")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(step name)
  message(STATUS "[package ${KIND}] ${name}")
endfunction()

# Runs a command; stops the test with its output if it fails. OUTPUT_VARIABLE gets stdout.
function(run)
  cmake_parse_arguments(R "" "OUTPUT_VARIABLE;WORKING_DIRECTORY" "COMMAND" ${ARGN})
  if(NOT R_WORKING_DIRECTORY)
    set(R_WORKING_DIRECTORY "${WORK_DIR}")
  endif()
  execute_process(COMMAND ${R_COMMAND} WORKING_DIRECTORY "${R_WORKING_DIRECTORY}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " shown "${R_COMMAND}")
    message(FATAL_ERROR "[package ${KIND}] failed (${rc}): ${shown}\n--- stdout\n${out}\n--- stderr\n${err}")
  endif()
  if(R_OUTPUT_VARIABLE)
    set(${R_OUTPUT_VARIABLE} "${out}" PARENT_SCOPE)
  endif()
endfunction()

# The consumer's output, line by line (see consumer.cpp for the arithmetic).
function(check_consumer_output how out)
  set(expected
    "flowpool ${VERSION}"
    "pool: status=failed submitted=100 succeeded=99 failed=1 sum=338301"  # 1^2+..+100^2 - 7^2
    "error: job=7 kind=exception message=seven is not welcome"
    "cancel: status=cancelled submitted=10 cancelled=10 accounted=yes"
    "graph: status=ok succeeded=10 sink=385 json_status=ok"                # 1^2+..+10^2
    "spec_error: code=invalid_spec path=stages[0].workers")
  string(REPLACE ";" "," out_commas "${out}")  # no list splitting on stray semicolons
  string(REGEX REPLACE "\n$" "" out_commas "${out_commas}")
  string(REPLACE "\n" ";" got "${out_commas}")
  if(NOT got STREQUAL expected)
    string(REPLACE ";" "\n" want "${expected}")
    message(FATAL_ERROR "[package ${KIND}] ${how}: unexpected output\n--- got\n${out}\n--- expected\n${want}")
  endif()
  message(STATUS "[package ${KIND}] ${how}: output as expected")
endfunction()

function(assert_exists)
  foreach(f ${ARGN})
    if(NOT EXISTS "${f}")
      message(FATAL_ERROR "[package ${KIND}] not installed: ${f}")
    endif()
  endforeach()
endfunction()

# ---- build and install flowpool ------------------------------------------------------------
step("configure, build and install flowpool (${KIND}) into ${prefix}")
run(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${WORK_DIR}/flowpool-build" -G "${GENERATOR}"
            "-DCMAKE_CXX_COMPILER=${CXX}" -DCMAKE_BUILD_TYPE=Release "-DBUILD_SHARED_LIBS=${shared}"
            -DFLOWPOOL_BUILD_TESTS=OFF -DFLOWPOOL_BUILD_BENCH=OFF -DFLOWPOOL_BUILD_EXAMPLES=OFF
            -DFLOWPOOL_BUILD_DOCS=OFF "-DFLOWPOOL_BUILD_CLI=${WITH_CLI}" -DFLOWPOOL_WERROR=ON
            "-DCMAKE_INSTALL_PREFIX=${prefix}")
run(COMMAND "${CMAKE_COMMAND}" --build "${WORK_DIR}/flowpool-build" -j 2)
run(COMMAND "${CMAKE_COMMAND}" --install "${WORK_DIR}/flowpool-build")

# The layout (GNUInstallDirs; the libdir is read back from the build's cache).
file(STRINGS "${WORK_DIR}/flowpool-build/CMakeCache.txt" libdir_line REGEX "^CMAKE_INSTALL_LIBDIR:")
string(REGEX REPLACE "^[^=]*=" "" libdir "${libdir_line}")
set(lib "${prefix}/${libdir}")
assert_exists("${prefix}/include/flowpool/flowpool.hpp" "${prefix}/include/flowpool/version.hpp"
              "${prefix}/include/flowpool/pool.hpp" "${prefix}/include/flowpool/detail/engine.hpp"
              "${lib}/cmake/flowpool/flowpoolConfig.cmake" "${lib}/cmake/flowpool/flowpoolConfigVersion.cmake"
              "${lib}/cmake/flowpool/flowpoolTargets.cmake" "${lib}/pkgconfig/flowpool.pc"
              "${prefix}/share/flowpool/graphs/seed.json" "${prefix}/share/doc/flowpool/README.md")
if(EXISTS "${prefix}/include/flowpool/version.hpp.in")
  message(FATAL_ERROR "[package ${KIND}] installed the version.hpp template")
endif()
file(READ "${prefix}/include/flowpool/version.hpp" version_hpp)
if(NOT version_hpp MATCHES "#define FLOWPOOL_VERSION_STRING \"${VERSION}\"")
  message(FATAL_ERROR "[package ${KIND}] installed version.hpp does not say ${VERSION}")
endif()
string(REGEX MATCH "^[0-9]+" major "${VERSION}")
if(shared)
  # Versioned shared library with a SONAME from the major version, and no static archive.
  assert_exists("${lib}/libflowpool.so.${VERSION}" "${lib}/libflowpool.so.${major}" "${lib}/libflowpool.so")
  if(EXISTS "${lib}/libflowpool.a")
    message(FATAL_ERROR "[package ${KIND}] a static archive was installed by a shared build")
  endif()
  find_program(READELF readelf)
  if(READELF)
    run(COMMAND "${READELF}" -d "${lib}/libflowpool.so.${VERSION}" OUTPUT_VARIABLE dyn)
    if(NOT dyn MATCHES "SONAME\\)[^\n]*\\[libflowpool\\.so\\.${major}\\]")
      message(FATAL_ERROR "[package ${KIND}] no SONAME libflowpool.so.${major}:\n${dyn}")
    endif()
    # Hidden visibility: the engine's internals in the .cpp files are not exported.
    run(COMMAND "${READELF}" --dyn-syms -W "${lib}/libflowpool.so.${VERSION}" OUTPUT_VARIABLE syms)
    string(REGEX MATCHALL "GLOBAL +DEFAULT +[0-9]+ [^\n]*" exported "${syms}")
    list(LENGTH exported n_exported)
    message(STATUS "[package ${KIND}] libflowpool.so exports ${n_exported} symbols")
    foreach(internal register_builtins validator print_sink range_source)
      if(syms MATCHES "${internal}")
        message(FATAL_ERROR "[package ${KIND}] internal symbol '${internal}' is exported")
      endif()
    endforeach()
  endif()
else()
  assert_exists("${lib}/libflowpool.a")
  file(GLOB so_files "${lib}/libflowpool.so*")
  if(so_files)
    message(FATAL_ERROR "[package ${KIND}] a shared library was installed by a static build: ${so_files}")
  endif()
endif()

if(WITH_CLI)
  step("the installed CLI and the shipped graphs")
  assert_exists("${prefix}/bin/flowpool")
  # No LD_LIBRARY_PATH: a shared CLI finds libflowpool through its install RPATH.
  run(COMMAND "${prefix}/bin/flowpool" --version OUTPUT_VARIABLE v)
  if(NOT v STREQUAL "flowpool ${VERSION}\n")
    message(FATAL_ERROR "[package ${KIND}] flowpool --version printed '${v}', expected 'flowpool ${VERSION}'")
  endif()
  run(COMMAND "${prefix}/bin/flowpool" run "${prefix}/share/flowpool/graphs/seed.json" OUTPUT_VARIABLE seed)
  string(REGEX MATCHALL "job=[1-8] worker-[1-3] done" seed_lines "${seed}")
  list(LENGTH seed_lines n)
  if(NOT n EQUAL 8)
    message(FATAL_ERROR "[package ${KIND}] the installed seed graph printed ${n} job lines, not 8:\n${seed}")
  endif()
  message(STATUS "[package ${KIND}] installed CLI: --version and the seed graph as expected")
elseif(EXISTS "${prefix}/bin/flowpool")
  message(FATAL_ERROR "[package ${KIND}] the CLI was installed though FLOWPOOL_BUILD_CLI=OFF")
endif()

# ---- 1. find_package -------------------------------------------------------------------------
step("consumer 1/3: find_package(flowpool CONFIG)")
run(COMMAND "${CMAKE_COMMAND}" -S "${consumer_src}" -B "${WORK_DIR}/consumer-find" -G "${GENERATOR}"
            "-DCMAKE_CXX_COMPILER=${CXX}" -DCMAKE_BUILD_TYPE=Release
            -DFLOWPOOL_CONSUMER_EXPECTED_BUILD_TYPE=Release
            -DFLOWPOOL_CONSUMER_MODE=find_package "-DCMAKE_PREFIX_PATH=${prefix}"
    OUTPUT_VARIABLE configure_out)
string(TOUPPER "${KIND}_LIBRARY" kind_upper)
if(NOT configure_out MATCHES "flowpool::flowpool is a ${kind_upper}")
  message(FATAL_ERROR "[package ${KIND}] find_package found the wrong library:\n${configure_out}")
endif()
run(COMMAND "${CMAKE_COMMAND}" --build "${WORK_DIR}/consumer-find" -j 2)
run(COMMAND "${WORK_DIR}/consumer-find/consumer" OUTPUT_VARIABLE out)
check_consumer_output("find_package" "${out}")

# The build tree's export() works the same way, without installing.
step("consumer 1/3, again: find_package(flowpool CONFIG) from the build tree (flowpool_DIR)")
run(COMMAND "${CMAKE_COMMAND}" -S "${consumer_src}" -B "${WORK_DIR}/consumer-buildtree" -G "${GENERATOR}"
            "-DCMAKE_CXX_COMPILER=${CXX}" -DCMAKE_BUILD_TYPE=Release
            -DFLOWPOOL_CONSUMER_EXPECTED_BUILD_TYPE=Release
            -DFLOWPOOL_CONSUMER_MODE=find_package "-Dflowpool_DIR=${WORK_DIR}/flowpool-build")
run(COMMAND "${CMAKE_COMMAND}" --build "${WORK_DIR}/consumer-buildtree" -j 2)
run(COMMAND "${WORK_DIR}/consumer-buildtree/consumer" OUTPUT_VARIABLE out)
check_consumer_output("find_package (build tree)" "${out}")

# SameMajorVersion: the next major version is not accepted.
math(EXPR next_major "${major} + 1")
file(WRITE "${WORK_DIR}/version-check/CMakeLists.txt"
     "cmake_minimum_required(VERSION 3.22)\nproject(v LANGUAGES NONE)\nfind_package(flowpool ${next_major}.0 CONFIG REQUIRED)\n")
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${WORK_DIR}/version-check" -B "${WORK_DIR}/version-check/build"
                        "-DCMAKE_PREFIX_PATH=${prefix}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "compatible with requested version")
  message(FATAL_ERROR "[package ${KIND}] find_package(flowpool ${next_major}.0) did not fail on the version:\n${out}\n${err}")
endif()
message(STATUS "[package ${KIND}] find_package(flowpool ${next_major}.0) is refused (SameMajorVersion)")

# ---- 2. add_subdirectory ---------------------------------------------------------------------
# No build type given: the check in the consumer fails if flowpool sets one.
step("consumer 2/3: add_subdirectory(<flowpool source tree>)")
run(COMMAND "${CMAKE_COMMAND}" -S "${consumer_src}" -B "${WORK_DIR}/consumer-subdir" -G "${GENERATOR}"
            "-DCMAKE_CXX_COMPILER=${CXX}" "-DBUILD_SHARED_LIBS=${shared}"
            -DFLOWPOOL_CONSUMER_MODE=add_subdirectory "-DFLOWPOOL_SOURCE_DIR=${SOURCE_DIR}")
run(COMMAND "${CMAKE_COMMAND}" --build "${WORK_DIR}/consumer-subdir" -j 2)
run(COMMAND "${WORK_DIR}/consumer-subdir/consumer" OUTPUT_VARIABLE out)
check_consumer_output("add_subdirectory" "${out}")

# ---- 3. pkg-config and a plain compiler command -------------------------------------------
step("consumer 3/3: pkg-config and a plain compiler command")
find_program(PKG_CONFIG pkg-config REQUIRED)
set(pc_env "${CMAKE_COMMAND}" -E env "PKG_CONFIG_PATH=${lib}/pkgconfig")
run(COMMAND ${pc_env} "${PKG_CONFIG}" --modversion flowpool OUTPUT_VARIABLE pc_version)
string(STRIP "${pc_version}" pc_version)
if(NOT pc_version STREQUAL VERSION)
  message(FATAL_ERROR "[package ${KIND}] pkg-config --modversion flowpool says '${pc_version}', not ${VERSION}")
endif()
set(pc_static)
if(NOT shared)
  set(pc_static --static)
endif()
run(COMMAND ${pc_env} "${PKG_CONFIG}" ${pc_static} --cflags --libs flowpool OUTPUT_VARIABLE pc_flags)
string(STRIP "${pc_flags}" pc_flags)
message(STATUS "[package ${KIND}] pkg-config ${pc_static} --cflags --libs flowpool: ${pc_flags}")
separate_arguments(pc_flag_list UNIX_COMMAND "${pc_flags}")
run(COMMAND "${CXX}" -std=c++20 -O1 "${consumer_src}/consumer.cpp" ${pc_flag_list}
            -o "${WORK_DIR}/consumer-pkgconfig")
if(shared)
  run(COMMAND "${CMAKE_COMMAND}" -E env "LD_LIBRARY_PATH=${lib}" "${WORK_DIR}/consumer-pkgconfig" OUTPUT_VARIABLE out)
else()
  run(COMMAND "${WORK_DIR}/consumer-pkgconfig" OUTPUT_VARIABLE out)
endif()
check_consumer_output("pkg-config" "${out}")
if(READELF)
  run(COMMAND "${READELF}" -d "${WORK_DIR}/consumer-pkgconfig" OUTPUT_VARIABLE dyn)
  if(shared AND NOT dyn MATCHES "NEEDED\\)[^\n]*\\[libflowpool\\.so\\.${major}\\]")
    message(FATAL_ERROR "[package ${KIND}] the pkg-config consumer does not link libflowpool.so.${major}:\n${dyn}")
  elseif(NOT shared AND dyn MATCHES "libflowpool")
    message(FATAL_ERROR "[package ${KIND}] the static pkg-config consumer needs a shared libflowpool:\n${dyn}")
  endif()
endif()
message(STATUS "[package ${KIND}] all three consumer builds passed")
