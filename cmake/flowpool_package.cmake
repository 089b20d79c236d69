# flowpool's package: install rules, the CMake config package (targets, config,
# version), a build-tree export, flowpool.pc for pkg-config, and the `docs` target.
#
# Included at the end of the top-level CMakeLists.txt, once the library's sources
# and link lines are final: the dependencies a consumer needs (find_dependency()
# lines, pkg-config Requires) are derived from the library's own link lines, so a
# new link dependency cannot be forgotten here. An unknown one stops the configure
# with a message saying where to map it.

include(CMakePackageConfigHelpers)

set(FLOWPOOL_CONFIG_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/flowpool"
    CACHE STRING "Where flowpoolConfig.cmake is installed, relative to the prefix")
set(FLOWPOOL_PKGCONFIG_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig"
    CACHE STRING "Where flowpool.pc is installed, relative to the prefix")

# ---- what a consumer needs, from the library's link lines ---------------------------------
get_target_property(_fp_type flowpool TYPE)
get_target_property(_fp_link flowpool LINK_LIBRARIES)
get_target_property(_fp_iface flowpool INTERFACE_LINK_LIBRARIES)
if(NOT _fp_link)
  set(_fp_link "")
endif()
if(NOT _fp_iface)
  set(_fp_iface "")
endif()

# A shared library hides its PRIVATE dependencies; a static one passes all of them on.
set(_fp_public "")
foreach(_dep IN LISTS _fp_iface)
  if(NOT _dep MATCHES "^\\$<LINK_ONLY:")
    list(APPEND _fp_public "${_dep}")
  endif()
endforeach()
if(_fp_type STREQUAL "STATIC_LIBRARY")
  set(_fp_needed ${_fp_link})
else()
  set(_fp_needed ${_fp_public})
endif()
list(REMOVE_DUPLICATES _fp_needed)

set(FLOWPOOL_FIND_DEPENDENCIES "")  # lines for flowpoolConfig.cmake
set(_fp_pc_requires "")             # pkg-config modules a consumer always needs
set(_fp_pc_requires_private "")     # ... only when linking statically
set(_fp_pc_libs "")
set(_fp_pc_libs_private "")
foreach(_dep IN LISTS _fp_needed)
  list(FIND _fp_public "${_dep}" _fp_idx)
  if(_fp_idx GREATER -1)
    set(_fp_req _fp_pc_requires)
    set(_fp_lib _fp_pc_libs)
  else()
    set(_fp_req _fp_pc_requires_private)
    set(_fp_lib _fp_pc_libs_private)
  endif()
  if(_dep STREQUAL "TBB::tbb")
    string(APPEND FLOWPOOL_FIND_DEPENDENCIES "find_dependency(TBB 2021 COMPONENTS tbb)\n")
    list(APPEND ${_fp_req} tbb)
  elseif(_dep STREQUAL "Threads::Threads")
    string(APPEND FLOWPOOL_FIND_DEPENDENCIES "find_dependency(Threads)\n")
    list(APPEND ${_fp_lib} -pthread)
  elseif(_dep STREQUAL "nlohmann_json::nlohmann_json")
    string(APPEND FLOWPOOL_FIND_DEPENDENCIES "find_dependency(nlohmann_json 3)\n")
    list(APPEND ${_fp_req} nlohmann_json)
  elseif(_dep STREQUAL "OpenSSL::Crypto")
    string(APPEND FLOWPOOL_FIND_DEPENDENCIES "find_dependency(OpenSSL COMPONENTS Crypto)\n")
    list(APPEND ${_fp_req} libcrypto)
  elseif(_dep MATCHES "^zstd::libzstd_(shared|static)$")
    string(APPEND FLOWPOOL_FIND_DEPENDENCIES "find_dependency(zstd)\n")
    list(APPEND ${_fp_req} libzstd)
  elseif(_dep MATCHES "^[A-Za-z0-9_.+-]+$" AND NOT TARGET "${_dep}")
    list(APPEND ${_fp_lib} "-l${_dep}")  # a plain system library such as dl or rt
  else()
    message(FATAL_ERROR
      "flowpool links '${_dep}', which cmake/flowpool_package.cmake cannot yet pass on to consumers. "
      "Map it there to a find_dependency() line and a pkg-config module.")
  endif()
endforeach()
string(REPLACE ";" " " FLOWPOOL_PC_REQUIRES "${_fp_pc_requires}")
string(REPLACE ";" " " FLOWPOOL_PC_REQUIRES_PRIVATE "${_fp_pc_requires_private}")
string(REPLACE ";" " " FLOWPOOL_PC_LIBS "${_fp_pc_libs}")
string(REPLACE ";" " " FLOWPOOL_PC_LIBS_PRIVATE "${_fp_pc_libs_private}")
set(FLOWPOOL_LIBRARY_KIND shared)
if(_fp_type STREQUAL "STATIC_LIBRARY")
  set(FLOWPOOL_LIBRARY_KIND static)
endif()
set(FLOWPOOL_PC_CFLAGS "")
if(_fp_type STREQUAL "STATIC_LIBRARY")
  set(FLOWPOOL_PC_CFLAGS " -DFLOWPOOL_STATIC_DEFINE")
endif()

# ---- the CLI finds a shared libflowpool next to it: <prefix>/bin/../lib --------------------
if(TARGET flowpool_cli AND _fp_type STREQUAL "SHARED_LIBRARY")
  file(RELATIVE_PATH _fp_bin_to_lib "/prefix/${CMAKE_INSTALL_BINDIR}" "/prefix/${CMAKE_INSTALL_LIBDIR}")
  set_property(TARGET flowpool_cli APPEND PROPERTY INSTALL_RPATH "$ORIGIN/${_fp_bin_to_lib}")
endif()

# ---- install rules and the package ---------------------------------------------------------
if(FLOWPOOL_INSTALL)
  install(TARGETS flowpool EXPORT flowpoolTargets
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  # detail/ ships too: the pool template needs it (it is not public API).
  install(DIRECTORY include/flowpool DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
          FILES_MATCHING PATTERN "*.hpp")
  install(FILES ${PROJECT_BINARY_DIR}/include/flowpool/version.hpp
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/flowpool)
  if(TARGET flowpool_cli)
    install(TARGETS flowpool_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
  install(DIRECTORY graphs/ DESTINATION ${CMAKE_INSTALL_DATADIR}/flowpool/graphs)
  install(FILES README.md CHANGELOG.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
  install(DIRECTORY docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR} FILES_MATCHING PATTERN "*.md")

  # Installed package.
  install(EXPORT flowpoolTargets NAMESPACE flowpool:: DESTINATION ${FLOWPOOL_CONFIG_INSTALL_DIR})
  configure_package_config_file(cmake/flowpoolConfig.cmake.in
    ${PROJECT_BINARY_DIR}/package/flowpoolConfig.cmake
    INSTALL_DESTINATION ${FLOWPOOL_CONFIG_INSTALL_DIR})
  write_basic_package_version_file(${PROJECT_BINARY_DIR}/flowpoolConfigVersion.cmake
    VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
  install(FILES ${PROJECT_BINARY_DIR}/package/flowpoolConfig.cmake
                ${PROJECT_BINARY_DIR}/flowpoolConfigVersion.cmake
          DESTINATION ${FLOWPOOL_CONFIG_INSTALL_DIR})

  # Build-tree package: find_package(flowpool) with flowpool_DIR=<this build dir>.
  export(EXPORT flowpoolTargets NAMESPACE flowpool:: FILE ${PROJECT_BINARY_DIR}/flowpoolTargets.cmake)
  configure_package_config_file(cmake/flowpoolConfig.cmake.in
    ${PROJECT_BINARY_DIR}/flowpoolConfig.cmake
    INSTALL_DESTINATION ${PROJECT_BINARY_DIR}
    INSTALL_PREFIX ${PROJECT_BINARY_DIR})

  # pkg-config: relocatable (the prefix is found from the .pc file's own place).
  file(RELATIVE_PATH FLOWPOOL_PC_PREFIX_FROM_PCDIR "/prefix/${FLOWPOOL_PKGCONFIG_INSTALL_DIR}" "/prefix")
  string(REGEX REPLACE "/$" "" FLOWPOOL_PC_PREFIX_FROM_PCDIR "${FLOWPOOL_PC_PREFIX_FROM_PCDIR}")
  configure_file(cmake/flowpool.pc.in ${PROJECT_BINARY_DIR}/flowpool.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/flowpool.pc DESTINATION ${FLOWPOOL_PKGCONFIG_INSTALL_DIR})
endif()

# ---- docs: Doxygen over the public headers, warnings are errors ---------------------------
if(FLOWPOOL_BUILD_DOCS)
  find_package(Doxygen QUIET)
  if(DOXYGEN_FOUND)
    configure_file(docs/Doxyfile.in ${PROJECT_BINARY_DIR}/docs/Doxyfile @ONLY)
    file(MAKE_DIRECTORY ${PROJECT_BINARY_DIR}/docs)
    add_custom_target(docs
      COMMAND Doxygen::doxygen ${PROJECT_BINARY_DIR}/docs/Doxyfile
      WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
      COMMENT "API docs (Doxygen; any warning fails the build) -> ${PROJECT_BINARY_DIR}/docs/html"
      VERBATIM)
  else()
    add_custom_target(docs
      COMMAND ${CMAKE_COMMAND} -E echo "docs: doxygen not found; run scripts/setup-deps"
      COMMAND ${CMAKE_COMMAND} -E false
      VERBATIM)
  endif()
endif()
