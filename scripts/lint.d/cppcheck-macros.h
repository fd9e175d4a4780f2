/* Macros of library headers that cppcheck does not read (it is run without the
 * system include path, which would make it parse every system header): only
 * their shape matters for the analysis. */
#define json_object_foreach(object, key, value) for (key = 0, value = 0; key;)
#define json_array_foreach(array, index, value) for (index = 0, value = 0; value;)
