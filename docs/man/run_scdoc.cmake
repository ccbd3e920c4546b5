# Runs scdoc on one page: cmake -DSCDOC=... -DINPUT=page.8.scd -DOUTPUT=page.8 -P run_scdoc.cmake
foreach(var SCDOC INPUT OUTPUT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_scdoc.cmake: -D${var}=... is missing")
  endif()
endforeach()

execute_process(
  COMMAND ${SCDOC}
  INPUT_FILE ${INPUT}
  OUTPUT_FILE ${OUTPUT}
  ERROR_VARIABLE scdoc_error
  RESULT_VARIABLE scdoc_result)
if(NOT scdoc_result EQUAL 0)
  file(REMOVE ${OUTPUT})
  message(FATAL_ERROR "scdoc failed on ${INPUT}: ${scdoc_error}")
endif()
